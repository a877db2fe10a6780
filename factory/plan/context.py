"""What a family builder works with: the task's context, the askable fields of a sample, secrets.

Also the registry of builders (BUILDERS): a family is one builder in builders.py plus its entry in
prompts/families.yaml.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory import attacks
from factory.errors import FieldNotFound
from factory.models import Sample, Target, World
from factory.state import iter_paths, lookup

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


@functools.lru_cache(maxsize=4096)
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


@functools.lru_cache(maxsize=4096)
def _placeholders(phrase: str) -> frozenset[str]:
    """The {placeholder} names of a phrasing (cached: planning fills the same phrasings every task)."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(phrase) if name is not None)


def _fill(phrasings: tuple[str, ...], fields: dict[str, Any]) -> tuple[str, ...]:
    """The phrasings whose every {placeholder} names a field at hand, filled in."""
    out = []
    for phrase in phrasings:
        if _placeholders(phrase) <= fields.keys():
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
