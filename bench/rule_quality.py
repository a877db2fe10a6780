"""Precision and recall of the rule checks on the hand-written evaluation set (tests/data/rules).

Run from the project root:  .venv/bin/python bench/rule_quality.py [--data tests/data/rules]

A rule's positive is "it flagged the case"; the truth is whether the case lists the rule in `expect`.
Prints each built rule's figures and the overall ones (summed over case x rule), then the cases of the
rules not built yet (pending) with what the built rules already catch of them, then every miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.checks import RULES  # noqa: E402
from factory.checks.quality import Case, Score, flagged, load_cases, score  # noqa: E402


def line(name: str, s: Score) -> str:
    """One table row: counts, precision, recall."""
    counts = f"tp {s.tp:>3}  fp {s.fp:>3}  fn {s.fn:>3}"
    return f"  {name:<13} {counts}  precision {s.precision:.3f}  recall {s.recall:.3f}"


def pending_report(cases: list[Case]) -> list[str]:
    """Per unbuilt rule: how many bad cases any built rule already flags, and false flags on good ones."""
    out = []
    for rule in sorted({c.rule for c in cases}):
        mine = [c for c in cases if c.rule == rule]
        bad = [c for c in mine if c.expect]
        good = [c for c in mine if not c.expect]
        caught = [c for c in bad if flagged(c) & set(RULES)]
        noisy = [c for c in good if flagged(c)]
        out.append(
            f"  {rule:<13} {len(bad)} bad, {len(caught)} caught by a built rule; "
            f"{len(good)} good, {len(noisy)} flagged"
        )
        out += [f"    not caught: {c.name}" for c in bad if c not in caught]
    return out


def main() -> None:
    """Load the set, score it, print the figures and the misses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "rules")
    args = parser.parse_args()
    cases = load_cases(args.data)
    built = [c for c in cases if not c.pending]
    pending = [c for c in cases if c.pending]
    bad = sum(1 for c in built if c.expect)
    print(f"{len(built)} cases of built rules ({bad} bad, {len(built) - bad} good); {len(pending)} pending")
    scores = score(built)
    for name in RULES:
        print(line(name, scores[name]))
    print(line("overall", scores["overall"]))
    clean = sum(1 for c in built if not c.expect and not flagged(c))
    caught = sum(1 for c in built if c.expect and flagged(c) & c.expect)
    good = len(built) - bad
    print(f"  bad dialogues caught by a rule they break: {caught}/{bad}; good ones passing: {clean}/{good}")
    if pending:
        print("pending rules (no module yet):")
        print("\n".join(pending_report(pending)))
    misses = scores["overall"].misses
    print(f"misses ({len(misses)}):")
    for miss in misses:
        gap = next((c.gap for c in built if miss.startswith(f"{c.name}:") and c.gap), "")
        print(f"  {miss}" + (f"  [known gap: {gap}]" if gap else ""))


if __name__ == "__main__":
    main()
