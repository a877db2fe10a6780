"""Code transforms on top of any attack family: a share of planned attacks gets a transform chain.

    overlay = Overlay.from_settings(settings)           # None when transform_rate is 0
    tasks = iter_tasks(worlds, n, seed, mix, overlay=overlay)

A chosen task's attack turn, as the built-in phrase banks word it for its family (a persona swap,
a pasted state block, a fake authority), is run through a random chain of factory.transforms
(base64, rot13, homoglyphs, zero-width, payload splitting, another language, ...) and becomes the
task's code-given payload behind the chain's hint. The plan records the chain (`target.chain`), so
a teacher copies the encoded text verbatim (teachers are bad at base64), the checkers judge the
reply against the same canaries and forged values, and `undo_chain` gives the attack back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from factory import attacks, transforms
from factory.checks.format import MAX_CHARS
from factory.errors import ConfigError
from factory.models import Task

# Families whose attack is not a user turn the built-in writer words by the family's phrase bank:
# the answer carries the real value (premises), the user only asks (elicitation), or the pressure
# builds over rapport turns (escalation).
_NOT_OVERLAID = frozenset(
    {"false_premise", "staleness_claim", "out_of_state_elicitation", "multi_turn_escalation"}
)
# A payload must leave room in a user turn for the words around it (the format rule's limit).
_PAYLOAD_MAX = MAX_CHARS["user"] - 1000
_CHAIN_TRIES = 4  # chains drawn until one fits; a large state in a pasted block can outgrow several


@dataclass(frozen=True)
class Overlay:
    """Which share of attacks gets a chain, how long a chain may be, and the transforms drawn from."""

    rate: float
    max_len: int
    names: tuple[str, ...]  # the transforms chains are drawn from

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Overlay | None:
        """The overlay a run's settings ask for; None when none is (rate 0); ConfigError for bad values."""
        rate = settings["transform_rate"]
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"--transform-rate must be between 0 and 1, got {rate}")
        max_len = settings["transform_chain_max"]
        if max_len < 1:
            raise ConfigError(f"transform_chain_max must be 1 or more, got {max_len}")
        names = parse_names(settings["transforms"])
        return cls(rate, max_len, names) if rate > 0 else None

    def apply(self, task: Task, seed: int) -> Task:
        """`task` with a chain over its attack when the draw picks it and it can carry one; else `task`."""
        if not eligible(task):
            return task
        # Its own generator: a rate of 0 or a task not picked leaves the plan as it was.
        rng = attacks.rng_for("overlay", seed, task.id)
        if rng.random() >= self.rate:
            return task
        for _ in range(_CHAIN_TRIES):
            chain = transforms.random_chain(rng, self.max_len, self.names)
            candidate = overlaid(task, chain, rng.getrandbits(32))
            if len(candidate.target.payload or "") <= _PAYLOAD_MAX:
                return candidate
        return task  # every chain drawn made the attack too long: it goes out plain


def parse_names(spec: str | None) -> tuple[str, ...]:
    """`--transforms base64,rot13,lang_fr` as names ("all" or None: every transform); unknown names named."""
    known = transforms.registry()
    if spec is None or spec.strip() == "all":
        return tuple(sorted(known))
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--transforms is empty; give 'all' or names from: {', '.join(known)}")
    for name in names:
        transforms.get(name)  # ConfigError naming the nearest valid name
    return tuple(dict.fromkeys(names))


def eligible(task: Task) -> bool:
    """Whether a chain can go on `task`: an attack turn with a goal and no code transform of its own.

    In a multi-turn attack the chain goes on the attack turn; follow-up pushes and warm-up turns
    stay plain.
    """
    return (
        task.kind == "adversarial"
        and task.family not in _NOT_OVERLAID
        and not task.target.transform
        and not task.target.chain
        and bool(task.target.canaries or task.target.forged)
    )


def overlaid(task: Task, chain: transforms.Chain, salt: int) -> Task:
    """`task` whose attack turn (as the built-in writer words it) travels through `chain`."""
    # Imported here: planning needs the phrase banks only for overlaid tasks.
    from factory.teachers.builtin import attack_plaintext

    plaintext = attack_plaintext(task)
    encoded = transforms.apply_chain(plaintext, chain, salt)
    payload = f"{transforms.chain_hint(chain)}\n\n{encoded}"
    target = dataclasses.replace(task.target, payload=payload, chain=list(chain))
    return dataclasses.replace(task, target=target)
