"""The run report: exact numbers on a hand-built run directory, and totals on a real builtin run."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import read_jsonl, run_factory

from factory.generate import RunStats
from factory.report import build_report, render_markdown, write_report
from factory.report_stats import DistinctN, merge_distinct


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _meta(kind: str, family: str, world: str, usage: tuple[int, int] | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"id": f"{family}-{world}", "kind": kind, "family": family, "template": world}
    if usage is not None:
        meta["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return {**meta, **extra}


# Punctuation pads turns to exact lengths without adding word tokens, so distinct-n stays hand-countable.
ACCEPTED = [
    {  # dialogue 900 + 2 + 100 = 1002 chars; assistant turn 100 chars: "the cat sat on the mat"
        "messages": [
            _msg("system", "S" * 900),
            _msg("user", "hi"),
            _msg("assistant", "The cat sat on the mat." + "!" * 77),
        ],
        "meta": _meta("obedience", "cite_field", "bank", (100, 10)),
    },
    {  # 1990 + 1 + 7 + 1 + 7 = 2006 chars, two user turns; words: [no no] [no no]
        "messages": [
            _msg("system", "S" * 1990),
            _msg("user", "a"),
            _msg("assistant", "No, no."),
            _msg("user", "b"),
            _msg("assistant", "No, no!"),
        ],
        "meta": _meta("adversarial", "persona_swap", "clinic", (300, 30)),
    },
    {  # 500 + 1 + 200 = 701 chars; words: the cat sat
        "messages": [
            _msg("system", "S" * 500),
            _msg("user", "q"),
            _msg("assistant", "The cat sat." + "." * 188),
        ],
        "meta": _meta("obedience", "cite_field", "bank", (100, 10)),
    },
]

REJECTED = [
    {
        "id": "r1",
        "reason": "checks",
        "detail": "wrong value",
        "meta": _meta(
            "obedience",
            "cite_field",
            "bank",
            (200, 20),
            violations=[
                {"rule": "answer", "detail": "wrong value"},
                {"rule": "answer", "detail": "second wrong value"},
                {"rule": "format", "detail": "empty turn"},
            ],
        ),
    },
    {
        "id": "r2",
        "reason": "checks",
        "detail": "no answer",
        "meta": _meta(
            "adversarial", "persona_swap", "clinic", (50, 5), violations=[{"rule": "answer", "detail": "x"}]
        ),
    },
    {
        "id": "r3",
        "reason": "near_duplicate",
        "detail": "repeats a1",
        "meta": _meta("obedience", "cite_field", "clinic", (100, 10)),
    },
    {
        "id": "r4",
        "reason": "truncated",
        "detail": "cut off",
        "meta": _meta("adversarial", "persona_swap", "bank", None),
    },
]

NOW = datetime(2026, 1, 1, 0, 1, 10, tzinfo=UTC)  # 70 s after run.json's "created"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory written by hand, with a torn last line in rejected.jsonl."""
    run = tmp_path / "hand"
    run.mkdir()
    (run / "run.json").write_bytes(orjson.dumps({"created": "2026-01-01T00:00:00+0000"}))
    (run / "accepted.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in ACCEPTED))
    rejected = b"".join(orjson.dumps(r) + b"\n" for r in REJECTED)
    (run / "rejected.jsonl").write_bytes(rejected + b'{"id": "torn", "reas')
    return run


def _stats() -> RunStats:
    return RunStats(
        done_this_session=7,
        prompt_tokens=850,
        completion_tokens=85,
        completion_tokens_this_session=85,
        started=time.monotonic() - 10,
    )


def test_counts_and_acceptance_rates(run_dir: Path) -> None:
    report = build_report(run_dir, _stats(), now=NOW)
    assert (report["total"], report["accepted"], report["rejected"]) == (7, 3, 4)
    assert report["acceptance"] == 0.4286
    assert report["unreadable_lines"] == 1
    assert report["by_kind"] == {
        "adversarial": {"accepted": 1, "rejected": 2, "total": 3, "acceptance": 0.3333},
        "obedience": {"accepted": 2, "rejected": 2, "total": 4, "acceptance": 0.5},
    }
    assert report["by_family"]["cite_field"] == {"accepted": 2, "rejected": 2, "total": 4, "acceptance": 0.5}
    assert report["by_world"]["clinic"] == {"accepted": 1, "rejected": 2, "total": 3, "acceptance": 0.3333}


def test_rejection_reasons_rules_and_near_duplicates(run_dir: Path) -> None:
    report = build_report(run_dir, None, now=NOW)
    assert report["rejection_reasons"] == {
        "checks": {"count": 2, "rate": 0.2857},
        "near_duplicate": {"count": 1, "rate": 0.1429},
        "truncated": {"count": 1, "rate": 0.1429},
    }
    # r1 broke "answer" twice: it counts once for that rule.
    assert report["check_violations"] == {"answer": 2, "format": 1}
    assert report["near_duplicate_rate"] == 0.1429


def test_tokens_and_throughput(run_dir: Path) -> None:
    report = build_report(run_dir, _stats(), now=NOW)
    assert report["tokens"] == {
        "prompt": 850,
        "completion": 85,
        "total": 935,
        "per_accepted": {"prompt": 283.3, "completion": 28.3, "total": 311.7},
    }
    assert report["run"] == {
        "created": "2026-01-01T00:00:00+0000",
        "seconds": 70.0,
        "results_per_s": 0.1,
        "tokens_per_s": 13.4,
    }
    session = report["session"]
    assert session["results"] == 7 and session["interrupted"] is False
    assert 10 <= session["seconds"] < 20
    assert session["results_per_s"] == pytest.approx(7 / session["seconds"], abs=0.01)
    assert session["tokens_per_s"] == pytest.approx(935 / session["seconds"], abs=0.1)
    assert session["completion_tokens_per_s"] == pytest.approx(85 / session["seconds"], abs=0.1)


def _buckets(hist: dict[str, Any]) -> dict[str, int]:
    return {b["range"]: b["count"] for b in hist["buckets"]}


def test_length_histograms_count_accepted_dialogues(run_dir: Path) -> None:
    lengths = build_report(run_dir, None, now=NOW)["lengths"]
    assistant = lengths["assistant_turn_chars"]
    assert _buckets(assistant) == {
        "0-99": 2,
        "100-199": 1,
        "200-399": 1,
        "400-799": 0,
        "800-1599": 0,
        "1600-3199": 0,
        "3200+": 0,
    }
    assert (assistant["count"], assistant["min"], assistant["mean"], assistant["max"]) == (4, 7, 78.5, 200)
    dialogue = lengths["dialogue_chars"]
    assert {k: v for k, v in _buckets(dialogue).items() if v} == {"0-999": 1, "1000-1999": 1, "2000-2999": 1}
    assert (dialogue["min"], dialogue["mean"], dialogue["max"]) == (701, 1236.3, 2006)
    assert _buckets(lengths["user_turns"]) == {"0": 0, "1": 2, "2": 1, "3": 0, "4": 0, "5": 0, "6+": 0}


def test_distinct_n_over_assistant_turns(run_dir: Path) -> None:
    distinct = build_report(run_dir, None, now=NOW)["distinct"]
    # 13 words, 6 unique; 9 bigrams, 6 unique; 5 trigrams, 4 unique. No n-gram spans two turns:
    # otherwise persona_swap's "no no | no no" would add a trigram.
    assert distinct["overall"] == {
        "distinct-1": 0.4615,
        "distinct-2": 0.6667,
        "distinct-3": 0.8,
        "tokens": 13,
    }
    assert distinct["by_family"] == {
        "cite_field": {"distinct-1": 0.5556, "distinct-2": 0.7143, "distinct-3": 0.8, "tokens": 9},
        "persona_swap": {"distinct-1": 0.25, "distinct-2": 0.5, "distinct-3": None, "tokens": 4},
    }


def test_markdown_renders_every_section(run_dir: Path) -> None:
    report = write_report(run_dir, _stats())
    assert orjson.loads((run_dir / "report.json").read_bytes())["total"] == report["total"] == 7
    md = (run_dir / "report.md").read_text()
    assert md == render_markdown(report)
    for heading in (
        "## Acceptance by kind",
        "## Acceptance by family",
        "## Acceptance by world",
        "## Rejection reasons",
        "## Check violations (records per rule)",
        "## Tokens",
        "## Throughput",
        "### Assistant turn, characters",
        "### User turns per dialogue",
        "## Diversity of assistant turns (accepted)",
    ):
        assert heading in md
    assert "3 accepted of 7 (42.9%); near-duplicate rate 14.3%" in md
    assert "| cite_field | 2 | 2 | 4 | 50.0% |" in md
    assert "| answer | 2 |" in md
    assert "| per accepted record | 283.3 | 28.3 | 311.7 |" in md
    assert "| 0-99 | 2 | ############################## |" in md
    assert "| overall | 0.4615 | 0.6667 | 0.8 | 13 |" in md
    assert "1 unreadable lines were skipped." in md


def test_an_empty_run_reports_zeros_without_rates(tmp_path: Path) -> None:
    report = build_report(tmp_path, None, now=NOW)
    assert (report["total"], report["acceptance"], report["near_duplicate_rate"]) == (0, None, None)
    assert report["run"] is None and report["session"] is None
    assert report["distinct"]["overall"]["distinct-1"] is None
    md = render_markdown(report)
    assert "No rejections." in md and "- no timing available" in md


def test_builtin_run_report_matches_its_files(tmp_path: Path) -> None:
    result = run_factory("generate", "--n", "80", "--run", "r", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    accepted, rejected = read_jsonl(run / "accepted.jsonl"), read_jsonl(run / "rejected.jsonl")
    report = orjson.loads((run / "report.json").read_bytes())
    assert report["total"] == 80 == len(accepted) + len(rejected)
    assert (report["accepted"], report["rejected"]) == (len(accepted), len(rejected))
    for table in ("by_kind", "by_family", "by_world"):
        assert sum(row["total"] for row in report[table].values()) == 80
    records = accepted + rejected
    assert report["tokens"]["prompt"] == sum(r["meta"]["usage"]["prompt_tokens"] for r in records)
    assert report["tokens"]["completion"] == sum(r["meta"]["usage"]["completion_tokens"] for r in records)
    assistant_turns = [m for r in accepted for m in r["messages"] if m["role"] == "assistant"]
    assert report["lengths"]["assistant_turn_chars"]["count"] == len(assistant_turns)
    assert report["lengths"]["user_turns"]["count"] == len(accepted)
    assert report["session"]["results"] == 80 and report["run"]["results_per_s"] > 0
    assert 0 < report["distinct"]["overall"]["distinct-1"] < report["distinct"]["overall"]["distinct-3"] <= 1
    assert "## Diversity of assistant turns (accepted)" in (run / "report.md").read_text()


def test_distinct_n_matches_exact_sets_across_compactions() -> None:
    # 600k words: several dedup passes run (COMPACT_MIN is 262,144), and two parts are merged.
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    turns = [rng.choices(vocab, k=30) for _ in range(20_000)]
    parts = [DistinctN(), DistinctN()]
    for index, turn in enumerate(turns):
        parts[index % 2].add(turn)
    expected = {}
    for n in (1, 2, 3):
        grams = [tuple(turn[i : i + n]) for turn in turns for i in range(len(turn) - n + 1)]
        expected[f"distinct-{n}"] = round(len(set(grams)) / len(grams), 4)
    assert merge_distinct(parts) == {**expected, "tokens": 600_000}
