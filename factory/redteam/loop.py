"""The rounds: put attacks to the student, judge its replies, mutate what broke it, and count ASR."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from factory.attack_writer import Rejection
from factory.evaluate.runner import run_student
from factory.evaluate.score import Verdict, proportion
from factory.evaluate.students import Student, Transcript
from factory.evaluate.suite import Suite
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
    skipped: int = 0  # transform mutants whose every draw broke a rule with the correct reply
    rejected: list[Rejection] = field(default_factory=list)  # teacher paraphrases not kept, and why

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

    def by_how(self) -> dict[str, dict[str, Any]]:
        """Per way of making an attack (plan, transform, paraphrase): the same counts as per family."""
        hows = sorted({o.attack.how for o in self.outcomes})
        return {how: _counts([o for o in self.outcomes if o.attack.how == how]) for how in hows}

    def summary(self) -> dict[str, Any]:
        """The round as redteam.json holds it."""
        return {
            "round": self.round,
            **_counts(self.outcomes),
            "skipped_mutants": self.skipped,
            "how": self.by_how(),
            "paraphrase_rejected": dict(sorted(Counter(r.reason for r in self.rejected).items())),
            "paraphrase_rejections": [
                {"parent": r.task_id, "reason": r.reason, "detail": r.detail, "text": r.attack}
                for r in self.rejected
            ],
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


# (jobs, round, k) -> (paraphrase mutants, rewrites not kept): the teacher's half of a round's mutants.
Paraphraser = Callable[[list[tuple[Attack, Attack]], int, int], tuple[list[Attack], list[Rejection]]]


def _transform_mutants(
    broken: list[Outcome],
    roots: dict[str, Attack],
    round_: int,
    settings: dict[str, Any],
    result: RoundResult,
) -> list[Attack]:
    """`redteam_mutants` transform mutants of each attack that broke the student."""
    out: list[Attack] = []
    numbers: Counter[str] = Counter()  # per base: ids stay unique when two parents share a base
    for parent in broken:
        base = roots[parent.attack.base].task
        for _ in range(settings["redteam_mutants"]):
            child = mutate(
                parent.attack,
                base,
                round_,
                numbers[base.id],
                settings["seed"],
                settings["redteam_chain_max"],
                settings["redteam_mutate_tries"],
            )
            numbers[base.id] += 1
            if child is None:
                result.skipped += 1
            else:
                out.append(child)
    return out


def run_rounds(
    student: Student,
    first: list[Attack],
    settings: dict[str, Any],
    console: Console,
    on_round: Callable[[RoundResult], None] | None = None,
    paraphrase: Paraphraser | None = None,
) -> list[RoundResult]:
    """Round 0 on `first`; each later round on mutants of the attacks that broke the student before.

    A later round's mutants are transform mutants, plus with `paraphrase` (a URL teacher) up to
    `redteam_mutants` teacher paraphrases of each. Stops early when a round breaks nothing (there
    is nothing left to mutate). `settings` holds seed and DEFAULTS' redteam_* keys.
    """
    roots: dict[str, Attack] = {a.task.id: a for a in first}
    attacks, results = first, []
    for round_ in range(settings["redteam_rounds"]):
        result = RoundResult(round_)
        if round_:
            broken = results[-1].broken
            attacks = _transform_mutants(broken, roots, round_, settings, result)
            if paraphrase is not None and settings["redteam_mutants"]:
                jobs = [(o.attack, roots[o.attack.base]) for o in broken]
                found, result.rejected = paraphrase(jobs, round_, settings["redteam_mutants"])
                attacks += found
        if not attacks:
            break
        result.outcomes = put(student, attacks, console, f"round {round_}")
        results.append(result)
        if on_round is not None:
            on_round(result)
        if not result.broken:
            break
    return results
