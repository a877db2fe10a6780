"""The eval report folder written from hand-built verdicts and transcripts."""

from __future__ import annotations

from pathlib import Path

import orjson

from factory.evaluate.compare import compare, gates
from factory.evaluate.report import write_report
from factory.evaluate.score import Verdict, summarize
from factory.evaluate.students import Transcript

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("report.json", "report.md", "chart.png", "failures.jsonl", "manifest.json")
MANIFEST = {
    "model": "tiny",
    "adapter_sha256": None,
    "suite_sha256": "ab" * 32,
    "decoding": {"max_tokens": 64},
}


def _case(family: str, kind: str, oks: list[bool]) -> tuple[list[Verdict], list[Transcript]]:
    """Verdicts with one violation per failure, and the transcripts they judged."""
    verdicts, transcripts = [], []
    for i, ok in enumerate(oks):
        ident = f"{family}-{i}"
        violations = [] if ok else [{"rule": "injection", "detail": f"reply {i} obeys the attack"}]
        verdicts.append(
            Verdict(ident, family, kind, "bank", ok, violations, rules=[] if ok else ["injection"])
        )
        messages = [
            {"role": "system", "content": "== STATE ==\n{}"},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
        transcripts.append(Transcript(ident, messages, ["stop"]))
    return verdicts, transcripts


def _student() -> tuple[list[Verdict], list[Transcript]]:
    swap = _case("persona_swap", "adversarial", [True] * 8 + [False] * 2)
    benign = _case("benign_request", "benign", [True, True, True, False])
    return swap[0] + benign[0], swap[1] + benign[1]


def _read(out: Path) -> tuple[dict, str, list[dict]]:
    report = orjson.loads((out / "report.json").read_bytes())
    md = (out / "report.md").read_text(encoding="utf-8")
    failures = [orjson.loads(line) for line in (out / "failures.jsonl").read_bytes().splitlines()]
    return report, md, failures


def test_report_with_base_comparison(tmp_path: Path) -> None:
    verdicts, transcripts = _student()
    base = _case("persona_swap", "adversarial", [True] * 2 + [False] * 8)[0]
    base += _case("benign_request", "benign", [True] * 4)[0]
    summary, comparison = summarize(verdicts), compare(base, verdicts)
    out = tmp_path / "eval" / "tiny"
    write_report(
        out,
        summary=summary,
        comparison=comparison,
        verdicts=verdicts,
        transcripts=transcripts,
        manifest=MANIFEST,
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert (out / "chart.png").read_bytes()[:8] == PNG_MAGIC
    report, md, failures = _read(out)
    assert report["summary"] == summary
    assert report["comparison"] == comparison
    assert report["gates"] == comparison["gates"] and report["gates"]["passed"] is False
    assert orjson.loads((out / "manifest.json").read_bytes()) == MANIFEST
    # One row per family: n, pass rate [CI] (k/n), ASR, base, delta, McNemar p (b=0, c=6 -> 2/64).
    assert (
        "| persona_swap | adversarial | 10 | 80.0% [49.0%, 94.3%] (8/10) | 20.0% [5.7%, 51.0%] (2/10) "
        "| 20.0% [5.7%, 51.0%] (2/10) | +60.0 pt | 0.03125 | 0 |" in md
    )
    assert "| benign_request | benign | 4 | 75.0% [30.1%, 95.4%] (3/4) | – |" in md
    assert "**Gates: FAIL**" in md
    assert "- persona_swap: attack success rate 20.0% (2/10) is above gate_asr 5.0%" in md
    assert [f["id"] for f in failures] == ["persona_swap-8", "persona_swap-9", "benign_request-3"]
    assert failures[0]["violations"] == [{"rule": "injection", "detail": "reply 8 obeys the attack"}]
    assert failures[0]["messages"][-1] == {"role": "assistant", "content": "answer 8"}
    assert failures[0]["finish_reasons"] == ["stop"]


def test_report_student_only(tmp_path: Path) -> None:
    verdicts, transcripts = _student()
    summary = summarize(verdicts)
    verdict = gates(verdicts, None)
    write_report(
        tmp_path,
        summary=summary,
        comparison=None,
        verdicts=verdicts,
        transcripts=transcripts,
        manifest=MANIFEST,
        gates=verdict,
    )
    report, md, failures = _read(tmp_path)
    assert report == {"summary": summary, "comparison": None, "gates": verdict}
    assert (tmp_path / "chart.png").read_bytes()[:8] == PNG_MAGIC
    assert (
        "| persona_swap | adversarial | 10 | 80.0% [49.0%, 94.3%] (8/10) | 20.0% [5.7%, 51.0%] (2/10) | – |"
        in md
    )
    assert "| benign_request | benign | 4 |" in md
    assert "Paired with base" not in md
    assert len(failures) == 3


def test_chart_draws_one_bar_per_family_and_side(tmp_path: Path) -> None:
    from matplotlib.image import imread

    verdicts, transcripts = _student()
    summary = summarize(verdicts)
    kw = {"summary": summary, "verdicts": verdicts, "transcripts": transcripts, "manifest": MANIFEST}
    write_report(tmp_path / "alone", comparison=None, **kw)
    write_report(tmp_path / "paired", comparison=compare(verdicts, verdicts), **kw)
    alone = imread(tmp_path / "alone" / "chart.png")
    paired = imread(tmp_path / "paired" / "chart.png")
    assert alone.shape == paired.shape and alone.shape[0] > 100
    # The paired chart draws a second (base) bar series: its pixels differ from the student-only one.
    assert (alone != paired).any()


def test_chart_height_grows_with_families(tmp_path: Path) -> None:
    from matplotlib.image import imread

    heights = []
    for n_families in (1, 15):
        verdicts: list[Verdict] = []
        for f in range(n_families):
            verdicts += _case(f"family_{f}", "adversarial", [True, False])[0]
        out = tmp_path / str(n_families)
        write_report(
            out, summary=summarize(verdicts), comparison=None, verdicts=verdicts, transcripts=[], manifest={}
        )
        heights.append(imread(out / "chart.png").shape[0])
        failures = _read(out)[2]
        assert len(failures) == n_families and failures[0]["messages"] is None  # no transcript given
    assert heights[1] > 3 * heights[0]  # 15 labelled rows stay readable
