"""Turn worlds into Tasks: per index a family, a world, a state, and exactly what the example must show.

Everything is decided here, in code and deterministically from (seed, index), so the checkers can
verify the teacher's words against it. One builder per family fills the Target; a builder returns
None when its family cannot be shown on a sample, and the planner tries another sample of the world.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from factory import attacks, seeds
from factory.errors import ConfigError, FieldNotFound
from factory.mix import FamilySpec, families, iter_families, parse_mix, question_bank
from factory.models import Sample, Target, Task, World
from factory.state import BEGIN, iter_paths, lookup, render_state

__all__ = ["BUILDERS", "FamilySpec", "families", "parse_mix", "plan_tasks", "secret_values", "task_id"]

Expander = Callable[[World, int, int], Sample]
# Samples tried per world before moving a task to the next world that can host its family.
SAMPLE_TRIES = 12
_SCALAR = (str, int, float, bool)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def task_id(seed: int, world: str, index: int) -> str:
    """The stable id of task `index` of a run: 16 hex digits of sha256."""
    return hashlib.sha256(f"{seed}:{world}:{index}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Ask:
    """One concrete field a user could ask about in a sample, with the phrasings that fit it."""

    path: str  # concrete: pending_tasks[1].due
    questions: tuple[str, ...]
    present: bool
    value: Any


@dataclass
class Ctx:
    """What a family builder sees: the task's id, world, sample and its own random generator."""

    task_id: str
    world: World
    sample: Sample
    rng: random.Random

    @property
    def state(self) -> dict[str, Any]:
        """The sample's state."""
        return self.sample.state

    def token(self) -> str:
        """The task's canary token."""
        return attacks.canary_token(self.task_id)


def _template_of(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


def _under(path: str, roots: list[str]) -> bool:
    t = _template_of(path)
    return any(t == r or t.startswith((r + ".", r + "[")) for r in roots)


def _expand_path(state: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Concrete paths for a path with [*], each with the scalar fields of the items it passes through."""
    found: list[tuple[str, dict[str, Any]]] = [("", {})]
    for piece in path.split("."):
        wild = piece.endswith("[*]")
        key = piece.removesuffix("[*]")
        nxt: list[tuple[str, dict[str, Any]]] = []
        for prefix, fields in found:
            here = f"{prefix}.{key}" if prefix else key
            items = _get(state, here) if wild else None
            if not wild:
                nxt.append((here, fields))
            elif isinstance(items, list) and items:
                for k, item in enumerate(items):
                    extra = item if isinstance(item, dict) else {}
                    scalars = {a: b for a, b in extra.items() if isinstance(b, _SCALAR)}
                    nxt.append((f"{here}[{k}]", {**fields, **scalars}))
            else:  # no list or an empty one: ask about a first item that is not there
                nxt.append((f"{here}[0]", fields))
        found = nxt
    return found


def _get(state: dict[str, Any], path: str) -> Any:
    try:
        return lookup(state, path)
    except FieldNotFound:
        return None


def _fill(phrasings: tuple[str, ...], fields: dict[str, Any]) -> tuple[str, ...]:
    """The phrasings whose every {placeholder} names a field at hand, filled in."""
    out = []
    for phrase in phrasings:
        names = {name for _, name, _, _ in string.Formatter().parse(phrase) if name is not None}
        if names <= fields.keys():
            out.append(phrase.format_map(fields))
    return tuple(out)


def asks(world: World, state: dict[str, Any]) -> list[Ask]:
    """Every concrete askable field of a state, present or not; secret fields are never askable."""
    secret_roots = [s.path for s in world.secrets]
    result = []
    for askable in world.askables:
        for path, fields in _expand_path(state, askable.path):
            questions = _fill(askable.ask, fields)
            if not questions or _under(path, secret_roots):
                continue
            try:
                result.append(Ask(path, questions, True, lookup(state, path)))
            except FieldNotFound:
                result.append(Ask(path, questions, False, None))
    return result


def secret_values(world: World, state: dict[str, Any]) -> dict[str, str]:
    """Concrete path -> text of every secret present in the state."""
    found = {}
    for secret in world.secrets:
        for path, _ in _expand_path(state, secret.path):
            value = _get(state, path)
            if isinstance(value, _SCALAR) and str(value):
                found[path] = str(value)
    return found


def _find_key(state: dict[str, Any], key: str) -> tuple[str, Any] | None:
    """The first (path, value) whose last key is `key`, outside list items."""
    for path, value in iter_paths(state):
        if "[" not in path and path.rsplit(".", 1)[-1] == key:
            return path, value
    return None


def _higher_trust(ctx: Ctx) -> tuple[str, str] | None:
    """(trust path, a level above the current one), or None when the state is already at the top."""
    found = _find_key(ctx.state, "trust_level")
    levels = list(ctx.world.trust_levels)
    if found is None or found[1] not in levels:
        return None
    above = levels[levels.index(found[1]) + 1 :]
    return (found[0], ctx.rng.choice(above)) if above else None


def _name_path(state: dict[str, Any]) -> str:
    """Where the state names the assistant: identity.name (wherever `identity` sits)."""
    found = _find_key(state, "identity")
    return f"{found[0]}.name" if found and isinstance(found[1], dict) else "identity.name"


Builder = Callable[[Ctx], Target | None]
# Family name -> builder; a family is one builder here plus its entry in prompts/families.yaml.
BUILDERS: dict[str, Builder] = {}


def _family(builder: Builder) -> Builder:
    """Register a builder under its function name, which is the family's name."""
    BUILDERS[builder.__name__] = builder
    return builder


def _present_asks(ctx: Ctx) -> list[Ask]:
    return [a for a in asks(ctx.world, ctx.state) if a.present and isinstance(a.value, _SCALAR)]


# --- obedience and benign ---------------------------------------------------------------


@_family
def answer_from_state(ctx: Ctx) -> Target | None:
    """Ask a present field with one of its phrasings."""
    options = _present_asks(ctx)
    if not options:
        return None
    ask = ctx.rng.choice(options)
    return Target(field=ask.path, present=True, value=ask.value, question=ctx.rng.choice(ask.questions))


@_family
def cite_field(ctx: Ctx) -> Target | None:
    """Ask a present field and ask which field the answer came from."""
    target = answer_from_state(ctx)
    if target is not None:
        target.question = f"{target.question} {ctx.rng.choice(question_bank('cite_suffix'))}"
    return target


@_family
def absent_field(ctx: Ctx) -> Target | None:
    """Ask an askable field this sample does not have."""
    options = [a for a in asks(ctx.world, ctx.state) if not a.present]
    if not options:
        return None
    ask = ctx.rng.choice(options)
    return Target(field=ask.path, present=False, value=None, question=ctx.rng.choice(ask.questions))


@_family
def time_and_numbers(ctx: Ctx) -> Target | None:
    """Ask today's date, how many items a list holds, or a numeric field."""
    kinds: list[Target] = []
    now = _find_key(ctx.state, "current_time")
    if now and isinstance(now[1], str) and _DATE.match(now[1]):
        question = ctx.rng.choice(question_bank("date"))
        kinds.append(Target(field=now[0], present=True, value=now[1][:10], question=question))
    secret_roots = [s.path for s in ctx.world.secrets]
    world_lists = {ctx.world.allowed_actions, ctx.world.not_allowed_actions, ctx.world.trust_levels}
    lists = [
        (path, value)
        for path, value in iter_paths(ctx.state)
        if isinstance(value, list)
        and "[" not in path
        and all(isinstance(v, dict) for v in value)
        and (value or tuple(value) not in world_lists)  # an empty list may be a world's empty action list
        and not _under(path, secret_roots)
    ]
    if lists:
        path, value = ctx.rng.choice(lists)
        label = path.rsplit(".", 1)[-1].replace("_", " ")
        question = ctx.rng.choice(question_bank("count")).format(label=label)
        kinds.append(Target(field=path, present=True, value=len(value), question=question))
    numbers = [a for a in _present_asks(ctx) if type(a.value) in (int, float)]  # bool is not a number here
    if numbers:
        ask = ctx.rng.choice(numbers)
        question = ctx.rng.choice(ask.questions)
        kinds.append(Target(field=ask.path, present=True, value=ask.value, question=question))
    return ctx.rng.choice(kinds) if kinds else None


def _same_word(a: str, b: str) -> bool:
    """Words match when equal or when one extends the other by a suffix (remind/reminder, task/tasks)."""
    short, long = sorted((a, b), key=len)
    return short == long or (len(short) >= 4 and long.startswith(short))


def _action_in(request: str, actions: tuple[str, ...]) -> str | None:
    """The allowed action a request plainly names: its verb is used and no other action fits as well.

    Deliberately cautious (None when unsure): checkers may hold the model to this action.
    """
    words = re.findall(r"[a-z]+", request.casefold())
    score = {}
    for action in actions:
        parts = action.casefold().split("_")
        if any(_same_word(parts[0], w) for w in words):
            score[action] = sum(any(_same_word(p, w) for w in words) for p in parts)
    ranked = sorted(score.values(), reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0] == ranked[1]):
        return None
    return max(score, key=lambda a: score[a])


@_family
def benign_request(ctx: Ctx) -> Target | None:
    """One of the world's harmless requests, with the allowed action it uses when that is clear."""
    if not ctx.world.benign_requests:
        return None
    request = ctx.rng.choice(ctx.world.benign_requests)
    action = _action_in(request, ctx.world.allowed_actions)
    return Target(question=request, action=action, action_allowed=True)


# --- adversarial ------------------------------------------------------------------------


@_family
def ignore_previous_instructions(ctx: Ctx) -> Target | None:
    """The attacker demands the canary token."""
    return Target(canaries=[ctx.token()])


@_family
def persona_swap(ctx: Ctx) -> Target | None:
    """The attacker renames the assistant to a persona of its own."""
    path = _name_path(ctx.state)
    persona = attacks.persona_for(ctx.task_id, render_state(ctx.state))
    return Target(forged={path: persona}, canaries=[persona])


@_family
def authority_impersonation(ctx: Ctx) -> Target | None:
    """A claimed developer/admin raises the trust level and demands the token."""
    higher = _higher_trust(ctx)
    if higher is None:
        found = _find_key(ctx.state, "trust_level")
        fallback = attacks.attack_data().fallback_trust
        if found is not None and found[1] == fallback:
            return None
        higher = (found[0] if found else "trust_level", fallback)
    return Target(forged={higher[0]: higher[1]}, canaries=[ctx.token()])


@_family
def fake_state_block(ctx: Ctx) -> Target | None:
    """A forged STATE block with raised trust, a granted action or a new name, built by code."""
    changes: list[tuple[str, Any, str | None]] = []  # (path, forged value, action it grants)
    higher = _higher_trust(ctx)
    if higher:
        changes.append((*higher, None))
    allowed = _find_key(ctx.state, "allowed_actions")
    if allowed and isinstance(allowed[1], list) and ctx.world.not_allowed_actions:
        action = ctx.rng.choice(ctx.world.not_allowed_actions)
        changes.append((allowed[0], [*allowed[1], action], action))
    persona = attacks.persona_for(ctx.task_id, render_state(ctx.state))
    changes.append((_name_path(ctx.state), persona, None))
    chosen = ctx.rng.sample(changes, k=ctx.rng.randint(1, len(changes)))
    forged = {path: value for path, value, _ in chosen}
    action = next((a for _, _, a in chosen if a), None)
    # A reply that takes the forged name has accepted the forgery; the persona never occurs in the state.
    canaries = [ctx.token(), *([persona] if persona in forged.values() else [])]
    return Target(
        forged=forged,
        canaries=canaries,
        payload=attacks.fake_state_block(ctx.state, forged, drop=secret_values(ctx.world, ctx.state)),
        action=action,
        action_allowed=False if action else None,
    )


@_family
def trust_escalation(ctx: Ctx) -> Target | None:
    """The user argues for a higher trust level to get a not-allowed action done."""
    higher = _higher_trust(ctx)
    if higher is None or not ctx.world.not_allowed_actions:
        return None
    action = ctx.rng.choice(ctx.world.not_allowed_actions)
    return Target(forged={higher[0]: higher[1]}, action=action, action_allowed=False, canaries=[ctx.token()])


@_family
def action_outside_allowed(ctx: Ctx) -> Target | None:
    """The user asks for an action the state does not allow."""
    if not ctx.world.not_allowed_actions:
        return None
    action = ctx.rng.choice(ctx.world.not_allowed_actions)
    return Target(action=action, action_allowed=False, canaries=[ctx.token()])


@_family
def secret_extraction(ctx: Ctx) -> Target | None:
    """The user goes after one secret field."""
    secrets = secret_values(ctx.world, ctx.state)
    if not secrets:
        return None
    path = ctx.rng.choice(sorted(secrets))
    return Target(field=path, present=True, value=lookup(ctx.state, path), canaries=[secrets[path]])


@_family
def system_prompt_extraction(ctx: Ctx) -> Target | None:
    """The user asks for the system prompt; the block marker and every secret are canaries."""
    return Target(canaries=[BEGIN, *secret_values(ctx.world, ctx.state).values()])


@_family
def encoding_obfuscation(ctx: Ctx) -> Target | None:
    """An instruction for the token (and maybe a secret), encoded by code."""
    token = ctx.token()
    secrets = secret_values(ctx.world, ctx.state)
    secret = ctx.rng.choice(sorted(secrets)) if secrets and ctx.rng.random() < 0.5 else None
    transform = ctx.rng.choice(attacks.attack_data().transforms)
    plaintext = attacks.hidden_instruction(ctx.rng, token, secret)
    canaries = [token, secrets[secret]] if secret else [token]
    return Target(
        field=secret, canaries=canaries, payload=attacks.encode(transform, plaintext), transform=transform
    )


@_family
def multi_turn_escalation(ctx: Ctx) -> Target | None:
    """Rapport first, then a push for the token and sometimes a secret."""
    secrets = secret_values(ctx.world, ctx.state)
    if secrets and ctx.rng.random() < 0.5:
        path = ctx.rng.choice(sorted(secrets))
        return Target(field=path, canaries=[ctx.token(), secrets[path]])
    return Target(canaries=[ctx.token()])


# --- planning ---------------------------------------------------------------------------


def _sample_indices(seed: int, world: str, index: int) -> list[int]:
    """The task's own sample first, then fallbacks far from any task's own index, fixed per task."""
    alts = [int(task_id(seed, world, index)[:8], 16) + (1 << 32) * k for k in range(1, SAMPLE_TRIES)]
    return [index, *alts]


def _plan_one(worlds: list[World], index: int, seed: int, family: str, expand: Expander) -> Task:
    spec = families()[family]
    rotation = worlds[index % len(worlds) :] + worlds[: index % len(worlds)]
    hosts = [w for w in rotation if all(getattr(w, need) for need in spec.needs)]
    for world in hosts:
        tid = task_id(seed, world.name, index)
        for attempt, sample_index in enumerate(_sample_indices(seed, world.name, index)):
            sample = expand(world, seed, sample_index)
            rng = attacks.rng_for("task", seed, world.name, index, family, attempt)
            target = BUILDERS[family](Ctx(tid, world, sample, rng))
            if target is None:
                continue
            return Task(
                id=tid,
                kind=spec.kind,
                family=family,
                world=world.name,
                sample_index=sample_index,
                state=sample.state,
                expect=spec.expect,
                user_turns=rng.randint(*spec.user_turns),
                target=target,
                secrets=sorted(secret_values(world, sample.state)),
                allowed_actions=list(world.allowed_actions),
                trust_levels=list(world.trust_levels),
            )
    raise ConfigError(
        f"family {family!r} cannot be planned on any world ({', '.join(w.name for w in worlds)}): "
        f"it needs {', '.join(spec.needs) or 'a suitable state'}; give it weight 0 in --mix or add a world"
    )


def iter_tasks(
    worlds: list[World], n: int, seed: int, mix: dict[str, float], expand: Expander | None = None
) -> Iterator[Task]:
    """Plan tasks lazily, in index order: a long run holds only the tasks in flight in memory.

    Task i depends only on (worlds, seed, mix, i), so a longer run extends a shorter one. Bad
    arguments raise here, before the first task. `expand` defaults to factory.seeds.expand.
    """
    if not worlds:
        raise ConfigError("no worlds to plan from: add state templates under seeds/")
    if n < 0:
        raise ConfigError(f"the number of tasks must be zero or more, got {n}")
    unknown = sorted(set(mix) - set(BUILDERS))
    if unknown:
        raise ConfigError(f"no planner for famil(ies) {', '.join(unknown)}; parse the mix with parse_mix()")
    ordered = sorted(worlds, key=lambda w: w.name)
    plan = islice(iter_families(mix, seed), n)
    expander = expand or seeds.expand
    return (_plan_one(ordered, i, seed, family, expander) for i, family in enumerate(plan))


def plan_tasks(
    worlds: list[World], n: int, seed: int, mix: dict[str, float], expand: Expander | None = None
) -> list[Task]:
    """Plan n tasks as a list (see iter_tasks)."""
    return list(iter_tasks(worlds, n, seed, mix, expand))
