"""How well the rules judge labelled dialogues: load hand-written cases, run the rules, score them.

A case file is JSONL, one dialogue a line: `case` (a name), `rule` (the rule it is about), `world`
(a file `worlds/<world>.json` beside it: the state plus the world's secret paths and trust levels),
`task` (family and target, or null for foreign JSONL), `turns`, and `expect`: the rules that must
flag it (empty for a good dialogue). `pending: true` marks a case about a rule not built yet; it is
scored apart. `gap` (a sentence) marks a known miss of a built rule: the rules do not yet give the
expected verdict, and the case says why. A rule's positive is "it flagged the case"; the truth is
whether the rule is in `expect`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from factory.errors import ConfigError
from factory.mix import families
from factory.models import Message, Target, Task
from factory.state import render_state

from . import RULES, run_checks


@dataclass(frozen=True)
class Case:
    """One labelled dialogue: what it is about, the rules that must flag it, and how to run it."""

    name: str
    rule: str
    expect: frozenset[str]
    pending: bool
    messages: list[Message]
    task: Task | None
    state: dict[str, Any]
    note: str = ""
    gap: str = ""  # why the rules miss this case today; empty when they must get it right


@cache
def _world(directory: Path, name: str) -> dict[str, Any]:
    return json.loads((directory / "worlds" / f"{name}.json").read_text(encoding="utf-8"))


def _task(raw: dict[str, Any] | None, world: dict[str, Any], name: str, turns: list[Message]) -> Task | None:
    """A task for a case: the family's kind and expect from the catalogue, over the world's state."""
    if raw is None:
        return None
    family = families()[raw["family"]]
    state = world["state"]
    return Task(
        id=name,
        kind=family.kind,
        family=raw["family"],
        world=world["world"],
        sample_index=0,
        state=state,
        expect=family.expect,
        user_turns=raw.get("user_turns") or sum(1 for t in turns if t["role"] == "user"),
        target=Target(**raw.get("target", {})),
        secrets=list(world["secrets"]),
        allowed_actions=list(state.get("allowed_actions", [])),
        trust_levels=list(world["trust_levels"]),
    )


def load_cases(directory: str | Path) -> list[Case]:
    """Every case of the `*.jsonl` files in `directory`, in file then line order."""
    directory = Path(directory)
    cases: list[Case] = []
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                world = _world(directory, raw["world"])
            except (ValueError, KeyError, OSError) as exc:
                raise ConfigError(f"{path}:{number}: not a case line ({exc})") from exc
            turns = raw["turns"]
            name = f"{raw['rule']}: {raw['case']}"
            cases.append(
                Case(
                    name=name,
                    rule=raw["rule"],
                    expect=frozenset(raw["expect"]),
                    pending=bool(raw.get("pending", False)),
                    messages=[{"role": "system", "content": render_state(world["state"])}, *turns],
                    task=_task(raw["task"], world, name, turns),
                    state=world["state"],
                    note=raw.get("note", ""),
                    gap=raw.get("gap", ""),
                )
            )
    return cases


def flagged(case: Case) -> set[str]:
    """The rules that report at least one violation on the case."""
    return {v["rule"] for v in run_checks(case.messages, case.task, case.state)}


@dataclass
class Score:
    """Counts for one rule (or all together): flagged and expected, flagged only, expected only."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)  # "case: missed rule" or "case: false rule"

    @property
    def precision(self) -> float:
        """Share of the rule's flags that were expected (1.0 when it flagged nothing)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Share of the expected flags the rule raised (1.0 when none were expected)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score(cases: list[Case], rules: list[str] | None = None) -> dict[str, Score]:
    """Per-rule scores, plus "overall" summed over (case, rule) pairs, for the given cases."""
    names = list(rules or RULES)
    scores = {name: Score() for name in [*names, "overall"]}
    for case in cases:
        got = flagged(case)
        for name in names:
            hit, want = name in got, name in case.expect
            one, total = scores[name], scores["overall"]
            if hit and want:
                one.tp, total.tp = one.tp + 1, total.tp + 1
            elif hit:
                one.fp, total.fp = one.fp + 1, total.fp + 1
                one.misses.append(f"{case.name}: flagged by `{name}` but should not be")
            elif want:
                one.fn, total.fn = one.fn + 1, total.fn + 1
                one.misses.append(f"{case.name}: not flagged by `{name}`")
    scores["overall"].misses = [m for n in names for m in scores[n].misses]
    return scores
