"""The family catalogue (prompts/families.yaml), the --mix option, and which family each task index gets."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, cast, get_args

import yaml

from factory.attacks import rng_for
from factory.errors import ConfigError
from factory.models import Expect, Kind
from factory.paths import PROMPTS_DIR

FAMILIES_FILE = PROMPTS_DIR / "families.yaml"
KINDS: tuple[str, ...] = get_args(Kind)
EXPECTS: tuple[str, ...] = get_args(Expect)
# World attributes a family may need to be non-empty (names of World fields).
NEEDS = ("askables", "benign_requests", "secrets", "allowed_actions", "not_allowed_actions", "trust_levels")
# Tasks are assigned in blocks: each block holds the mix's share of every family (carrying rounding
# over to the next block), shuffled. Small enough that short runs follow the mix, and independent
# of n, so a longer run plans the same first tasks.
BLOCK = 50


@dataclass(frozen=True)
class FamilySpec:
    """One family of examples: its kind, the right behaviour, and how many user turns it takes."""

    name: str
    kind: Kind
    expect: Expect
    user_turns: tuple[int, int]  # inclusive range; equal ends for a fixed count
    description: str  # one line for teacher prompts
    needs: tuple[str, ...]  # World attributes that must be non-empty


def _spec(name: str, raw: Any, source: Path) -> FamilySpec:
    where = f"{source}: families.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    if raw.get("kind") not in KINDS:
        raise ConfigError(f"{where}.kind: {raw.get('kind')!r} is not one of {', '.join(KINDS)}")
    if raw.get("expect") not in EXPECTS:
        raise ConfigError(f"{where}.expect: {raw.get('expect')!r} is not one of {', '.join(EXPECTS)}")
    turns = raw.get("user_turns")
    low = high = None
    if isinstance(turns, int):
        low = high = turns
    elif isinstance(turns, list) and len(turns) == 2:
        low, high = turns
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        raise ConfigError(f"{where}.user_turns: expected an int >= 1 or [low, high], got {turns!r}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}.description: a one-line description is required")
    needs = raw.get("needs", [])
    if not isinstance(needs, list) or any(n not in NEEDS for n in needs):
        raise ConfigError(f"{where}.needs: expected a list drawn from {', '.join(NEEDS)}, got {needs!r}")
    return FamilySpec(
        name=name,
        kind=cast(Kind, raw["kind"]),
        expect=cast(Expect, raw["expect"]),
        user_turns=(low, high),
        description=" ".join(description.split()),
        needs=tuple(needs),
    )


@cache
def _catalogue(path: Path = FAMILIES_FILE) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("families"), dict) or not raw["families"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'families' mapping")
    specs = {name: _spec(name, spec, path) for name, spec in raw["families"].items()}
    questions = raw.get("questions", {})
    for key in ("cite_suffix", "date", "count", "lookalike", "estimate"):
        bank = questions.get(key) if isinstance(questions, dict) else None
        if not isinstance(bank, list) or not bank or not all(isinstance(q, str) for q in bank):
            raise ConfigError(f"{path}: questions.{key} must be a non-empty list of strings")
    return {"families": specs, "questions": {k: tuple(v) for k, v in questions.items()}}


def families() -> dict[str, FamilySpec]:
    """Every family in prompts/families.yaml, in catalogue order."""
    return dict(_catalogue()["families"])


def question_bank(name: str) -> tuple[str, ...]:
    """Planner-filled phrasings from prompts/families.yaml (cite_suffix, date, count, lookalike, estimate)."""
    return _catalogue()["questions"][name]


def _weight(item: str) -> tuple[str, float]:
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--mix: {item!r} should look like name=weight (e.g. adversarial=0.45)")
    try:
        weight = float(value)
    except ValueError:
        raise ConfigError(f"--mix: the weight of {name!r} is not a number: {value.strip()!r}") from None
    if not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"--mix: the weight of {name!r} must be zero or more, got {value.strip()}")
    return name, weight


def parse_mix(text: str) -> dict[str, float]:
    """Parse 'obedience=0.4,secret_extraction=2,...' into normalised weights per family.

    A kind's weight is split evenly over its families that are not named on their own.
    """
    catalogue = families()
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, weight = _weight(item)
        if name not in KINDS and name not in catalogue:
            near = difflib.get_close_matches(name, [*KINDS, *catalogue], n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"--mix: unknown kind or family {name!r}{hint} "
                f"(kinds: {', '.join(KINDS)}; families: {', '.join(catalogue)})"
            )
        if name in weights:
            raise ConfigError(f"--mix: {name!r} is given twice")
        weights[name] = weight
    if not weights:
        raise ConfigError("--mix is empty; e.g. obedience=0.4,benign=0.15,adversarial=0.45")
    per_family = {f: weights.get(f, 0.0) for f in catalogue}
    for kind in KINDS:
        if not weights.get(kind):
            continue
        rest = [f for f, spec in catalogue.items() if spec.kind == kind and f not in weights]
        if not rest:
            raise ConfigError(
                f"--mix: every {kind} family is named on its own, so the weight of {kind!r} has nowhere to go"
            )
        for f in rest:
            per_family[f] += weights[kind] / len(rest)
    total = sum(per_family.values())
    if total <= 0:
        raise ConfigError("--mix: the weights add up to zero; give at least one a positive weight")
    return {f: w / total for f, w in per_family.items() if w > 0}


def _block_counts(mix: dict[str, float]) -> Iterator[dict[str, int]]:
    """Seats per family in each successive block; rounding is carried, so totals never drift."""
    names = sorted(mix)  # ties break by name, whatever order the caller's dict has
    credit = dict.fromkeys(names, 0.0)
    while True:
        due = {f: credit[f] + mix[f] * BLOCK for f in names}
        counts = dict.fromkeys(names, 0)
        for _ in range(BLOCK):  # each seat goes to the family furthest below its due share
            pick = max(names, key=lambda f: due[f] - counts[f])
            counts[pick] += 1
        credit = {f: due[f] - counts[f] for f in names}
        yield counts


def iter_families(mix: dict[str, float], seed: int) -> Iterator[str]:
    """The family of task index 0, 1, 2, … without end; entry i depends on (mix, seed, i) only."""
    if not mix:
        raise ConfigError("the mix has no family with a positive weight")
    return _families(mix, seed)


def _families(mix: dict[str, float], seed: int) -> Iterator[str]:
    for block, counts in enumerate(_block_counts(mix)):
        seats = [f for f, c in counts.items() for _ in range(c)]
        rng_for("mix", seed, block).shuffle(seats)
        yield from seats


def assign_families(mix: dict[str, float], n: int, seed: int) -> list[str]:
    """The family of each task index 0..n-1 (the first n of iter_families)."""
    return list(islice(iter_families(mix, seed), n))
