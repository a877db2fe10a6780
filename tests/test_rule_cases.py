"""The rules on the hand-written evaluation set (tests/data/rules): every case gets its expected verdict."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from factory.checks import RULES
from factory.checks.quality import Case, flagged, load_cases, score

DATA = Path(__file__).parent / "data" / "rules"
CASES = load_cases(DATA)
BUILT = [c for c in CASES if not c.pending]
PENDING = [c for c in CASES if c.pending]
# Rules the issue asks for that have no module yet: their cases wait in the set, marked pending.
UNBUILT = {"trust", "prompt_leak"} - set(RULES)


def _verdict(case: Case) -> pytest.param:
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_verdict(c) for c in BUILT])
def test_case_is_flagged_by_exactly_its_expected_rules(case: Case) -> None:
    assert flagged(case) == set(case.expect)


@pytest.mark.parametrize("case", [c for c in PENDING if not c.expect], ids=lambda c: c.name)
def test_good_cases_of_unbuilt_rules_pass_every_built_rule(case: Case) -> None:
    assert flagged(case) == set()


def test_every_rule_has_five_bad_and_five_good_cases_over_three_worlds() -> None:
    bad = Counter(c.rule for c in CASES if c.expect)
    good = Counter(c.rule for c in CASES if not c.expect)
    for rule in [*RULES, *UNBUILT]:
        assert bad[rule] >= 5 and good[rule] >= 5, (rule, bad[rule], good[rule])
    assert len({c.task.world for c in CASES if c.task is not None}) >= 3


def test_a_bad_case_names_its_own_rule_and_only_known_rules() -> None:
    known = set(RULES) | UNBUILT
    for case in CASES:
        assert case.expect <= known, case.name
        assert not case.expect or case.rule in case.expect, case.name
        assert case.pending == (case.rule in UNBUILT), case.name


def test_scores_count_a_miss_and_a_false_flag() -> None:
    """The scorer itself: a caught case, a missed one and a wrongly flagged good one, counted as such."""
    caught = next(c for c in BUILT if c.expect == {"secrets"} and not c.gap)
    clean = next(c for c in BUILT if not c.expect and not c.gap)
    missed = replace(caught, name="miss", expect=frozenset({"secrets", "identity"}))
    false = replace(caught, name="false", expect=clean.expect)  # a leaking dialogue labelled good
    scores = score([caught, missed, false], ["secrets", "identity"])
    assert (scores["secrets"].tp, scores["secrets"].fp, scores["secrets"].fn) == (2, 1, 0)
    assert (scores["identity"].tp, scores["identity"].fn) == (0, 1)
    assert scores["secrets"].precision == pytest.approx(2 / 3) and scores["identity"].recall == 0.0
    assert scores["overall"].misses == [
        "false: flagged by `secrets` but should not be",
        "miss: not flagged by `identity`",
    ]
