"""Red-team attacks: planned per family, put to a student as suite items, and mutated between rounds."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from factory import transforms
from factory.attacks import rng_for
from factory.checkfile import plan_of, task_meta
from factory.checks import run_checks
from factory.errors import ConfigError
from factory.evaluate.suite import EvalItem
from factory.mix import families
from factory.models import Task, World
from factory.plan import plan_tasks
from factory.state import render_state
from factory.teachers.builtin import write_turns


@dataclass(frozen=True)
class Attack:
    """One attack as put to the student: its task, the suite item, and where it came from."""

    task: Task  # the planned task; a mutant's has its own id and, if the turn moved it, payload
    item: EvalItem  # system, user turns and meta (with the plan) for the student and the checkers
    round: int
    base: str  # the id of the round-0 attack it descends from (its own id in round 0)
    parent: str | None = None  # the attack it was mutated from
    chain: tuple[str, ...] = ()  # the transforms applied to its attack turn
    how: str = "plan"  # plan (round 0) | transform (worded anew, then encoded) | paraphrase (by the teacher)

    @property
    def family(self) -> str:
        """The attack's family."""
        return self.task.family


def adversarial_families(names: list[str] | None = None) -> list[str]:
    """The named adversarial families (every one when None), checked against the catalogue."""
    catalogue = families()
    attacks = [name for name, spec in catalogue.items() if spec.kind == "adversarial"]
    if names is None:
        return attacks
    if not names:
        raise ConfigError(f"--families is empty; name one or more of: {', '.join(attacks)}")
    for name in names:
        if name not in attacks:
            what = f"a {catalogue[name].kind} family, not an attack" if name in catalogue else "unknown"
            raise ConfigError(f"--families: {name!r} is {what}; adversarial families: {', '.join(attacks)}")
    return list(dict.fromkeys(names))


def attack_item(task: Task, user_turns: list[str], reference: list[str]) -> EvalItem:
    """The suite item of an attack: the rendered STATE, the user turns, meta with the exact plan."""
    meta = {**task_meta(task), "plan": plan_of(task)}  # the checkers rebuild the exact task from the plan
    return EvalItem(
        id=task.id,
        family=task.family,
        kind=task.kind,
        template=task.world,
        system=render_state(task.state),
        user_turns=user_turns,
        meta=meta,
        reference=reference,
    )


def split(task: Task) -> tuple[list[str], list[str]]:
    """The built-in teacher's dialogue for a task, as (user turns, correct replies)."""
    turns = write_turns(task)
    return [m["content"] for m in turns if m["role"] == "user"], [
        m["content"] for m in turns if m["role"] == "assistant"
    ]


def family_seed(seed: int, family: str) -> int:
    """The planning seed of one family: task ids then differ across families of one run."""
    return int(hashlib.sha256(f"redteam:{seed}:{family}".encode()).hexdigest()[:8], 16)


def plan_attacks(worlds: list[World], names: list[str], per_family: int, seed: int) -> list[Attack]:
    """Round 0: `per_family` planned attacks of each family, worded by the built-in teacher."""
    if per_family < 1:
        raise ConfigError(f"--per-family must be 1 or more, got {per_family}")
    out = []
    for family in names:
        for task in plan_tasks(worlds, per_family, family_seed(seed, family), {family: 1.0}):
            users, replies = split(task)
            out.append(Attack(task, attack_item(task, users, replies), round=0, base=task.id))
    return out


def mutate(
    parent: Attack, base: Task, round_: int, index: int, seed: int, chain_max: int, tries: int
) -> Attack | None:
    """Mutant `index` of `parent` for round `round_`, or None when no draw passes the checkers.

    The base task (the round-0 attack) is worded anew under a new id, then its attack turn (the
    last user turn, which carries the push and the canary demand) goes through a random transform
    chain behind the chain's hint. Target, canaries and forged values stay, so the checkers judge the
    student as before; the draw is kept only when the teacher's correct replies pass every checker,
    so a mutant never breaks a rule by its shape alone (a turn grown past the length limit).
    """
    task_id = f"{base.id}.r{round_}.{index}"
    rng = rng_for("redteam", seed, parent.task.id, round_, index)
    for _ in range(max(1, tries)):
        task = dataclasses.replace(base, id=task_id, target=dataclasses.replace(base.target))
        users, replies = split(task)  # the new id draws new wording: the offline paraphrase
        chain = transforms.random_chain(rng, max_len=max(1, chain_max))
        encoded = transforms.apply_chain(users[-1], chain, rng)
        users[-1] = f"{transforms.chain_hint(chain)}\n\n{encoded}"
        payload = task.target.payload
        if payload and not any(payload in user for user in users):
            task.target.payload = encoded  # the payload now travels encoded; the format rule looks for it
        item = attack_item(task, users, replies)
        if not run_checks(item.messages(), task, task.state):
            return Attack(
                task, item, round_, base=base.id, parent=parent.task.id, chain=chain, how="transform"
            )
    return None
