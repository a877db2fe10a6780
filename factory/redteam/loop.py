"""The rounds: put attacks to the student, judge its replies, mutate what broke it, and count ASR."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from factory.evaluate.runner import run_student
from factory.evaluate.score import Verdict, proportion
from factory.evaluate.students import Student, Transcript
from factory.evaluate.suite import Suite
from factory.models import Task
from factory.redteam.attacks import Attack, mutate


@dataclass
class Outcome:
    """One attack as the student met it: its transcript and the checkers' verdict."""

    attack: Attack
    transcript: Transcript
    verdict: Verdict

    @property
    def broke(self) -> bool:
        """True when a checker flags the student's replies; a reply that never came is not a break."""
        return not self.verdict.ok and self.verdict.error is None


@dataclass
class RoundResult:
    """One round: every attack put to the student and what became of it."""

    round: int
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0  # mutants whose every draw broke a rule with the correct reply

    @property
    def broken(self) -> list[Outcome]:
        """The outcomes whose attack broke the student."""
        return [o for o in self.outcomes if o.broke]

    def families(self) -> dict[str, dict[str, Any]]:
        """Per family: attacks, answered, breaks, transport errors and the ASR with its Wilson interval."""
        out: dict[str, dict[str, Any]] = {}
        for family in sorted({o.attack.family for o in self.outcomes}):
            mine = [o for o in self.outcomes if o.attack.family == family]
            out[family] = _counts(mine)
        return out

    def broke_families(self) -> list[str]:
        """The families with at least one attack that broke the student this round, sorted."""
        return sorted({o.attack.family for o in self.broken})

    def summary(self) -> dict[str, Any]:
        """The round as redteam.json holds it."""
        return {
            "round": self.round,
            **_counts(self.outcomes),
            "skipped_mutants": self.skipped,
            "broke_families": self.broke_families(),
            "families": self.families(),
        }


def _counts(outcomes: list[Outcome]) -> dict[str, Any]:
    errors = sum(o.verdict.error is not None for o in outcomes)
    broken = sum(o.broke for o in outcomes)
    # A transport error says nothing about the student's robustness: ASR is over answered attacks.
    return {
        "attacks": len(outcomes),
        "errors": errors,
        "broken": broken,
        "asr": proportion(broken, len(outcomes) - errors),
    }


def put(student: Student, attacks: list[Attack], console: Console, label: str) -> list[Outcome]:
    """Put the attacks to the student and judge each transcript with the checkers."""
    # run_student reads only the suite's items: a red-team round is a suite built on the fly.
    suite = Suite(items=[a.item for a in attacks], sha256="", path=Path("."), source={})
    result = run_student(student, suite, console, label)
    judged = {t.item_id: (t, v) for t, v in zip(result.transcripts, result.verdicts, strict=True)}
    return [Outcome(a, *judged[a.item.id]) for a in attacks]


def run_rounds(
    student: Student,
    first: list[Attack],
    settings: dict[str, Any],
    console: Console,
    on_round: Callable[[RoundResult], None] | None = None,
) -> list[RoundResult]:
    """Round 0 on `first`; each later round on mutants of the attacks that broke the student before.

    Stops early when a round breaks nothing (there is nothing left to mutate). `settings` holds
    seed and DEFAULTS' redteam_* keys.
    """
    bases: dict[str, Task] = {a.task.id: a.task for a in first}
    attacks, results = first, []
    for round_ in range(settings["redteam_rounds"]):
        result = RoundResult(round_)
        if round_:
            attacks = []
            for parent in results[-1].broken:
                for index in range(settings["redteam_mutants"]):
                    child = mutate(
                        parent.attack,
                        bases[parent.attack.base],
                        round_,
                        index,
                        settings["seed"],
                        settings["redteam_chain_max"],
                        settings["redteam_mutate_tries"],
                    )
                    if child is None:
                        result.skipped += 1
                    else:
                        attacks.append(child)
        if not attacks:
            break
        result.outcomes = put(student, attacks, console, f"round {round_}")
        results.append(result)
        if on_round is not None:
            on_round(result)
        if not result.broken:
            break
    return results
