"""The run report: report.json and report.md, built from the run's files so resumes are counted."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from factory.report_stats import DISTINCT_N, RunTally, iter_jsonl, merge_distinct, rate
from factory.store import ACCEPTED, REJECTED, read_run_config

BAR_WIDTH = 30  # characters of the longest histogram bar in report.md


def tally_run(run_path: Path) -> RunTally:
    """Stream accepted.jsonl and rejected.jsonl through one tally."""
    tally = RunTally()
    for status, name in (("accepted", ACCEPTED), ("rejected", REJECTED)):
        for record in iter_jsonl(run_path / name):
            tally.add(status, record)
    return tally


def _tokens(tally: RunTally) -> dict[str, Any]:
    prompt, completion = tally.tokens["prompt_tokens"], tally.tokens["completion_tokens"]
    accepted = tally.counts["accepted"]
    return {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
        # Tokens spent on rejected records are part of what each usable record cost.
        "per_accepted": {
            "prompt": rate(prompt, accepted, 1),
            "completion": rate(completion, accepted, 1),
            "total": rate(prompt + completion, accepted, 1),
        },
    }


def _session(stats: Any) -> dict[str, Any] | None:
    """This session's throughput from the live counters (they start at zero on a resume)."""
    if stats is None:
        return None
    seconds = max(time.monotonic() - stats.started, 1e-9)
    tokens = stats.prompt_tokens + stats.completion_tokens
    return {
        "results": stats.done_this_session,
        "interrupted": stats.interrupted,
        "seconds": round(seconds, 3),
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "results_per_s": round(stats.done_this_session / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "completion_tokens_per_s": round(stats.completion_tokens_this_session / seconds, 1),
    }


def _whole_run(run_path: Path, finished: int, tokens: int, now: datetime) -> dict[str, Any] | None:
    """Throughput from run.json's creation time to now; pauses between sessions count as run time."""
    config = read_run_config(run_path) or {}
    try:
        created = datetime.strptime(config["created"], "%Y-%m-%dT%H:%M:%S%z")
    except (KeyError, TypeError, ValueError):
        return None
    seconds = max((now - created).total_seconds(), 1.0)  # "created" has whole seconds only
    return {
        "created": config["created"],
        "seconds": round(seconds, 1),
        "results_per_s": round(finished / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def build_report(run_path: Path, stats: Any, now: datetime | None = None) -> dict[str, Any]:
    """Count a run's records and measure them: acceptance, reasons, tokens, throughput, lengths, diversity.

    `stats` is the session's RunStats (or None when the report is rebuilt outside a run); `now` is the
    report time, the end of the whole-run throughput window.
    """
    now = now or datetime.now(UTC)
    tally = tally_run(run_path)
    accepted, rejected = tally.counts["accepted"], tally.counts["rejected"]
    total = accepted + rejected
    tokens = _tokens(tally)
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "total": total,
        "accepted": accepted,
        "rejected": rejected,
        "acceptance": rate(accepted, total),
        "unreadable_lines": tally.unreadable,
        "rejection_reasons": {
            reason: {"count": count, "rate": rate(count, total)}
            for reason, count in tally.reasons.most_common()
        },
        "near_duplicate_rate": rate(tally.reasons["near_duplicate"], total),
        "check_violations": dict(sorted(tally.rules.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_kind": tally.group_table("kind"),
        "by_family": tally.group_table("family"),
        "by_world": tally.group_table("world"),
        "tokens": tokens,
        "session": _session(stats),
        "run": _whole_run(run_path, total, tokens["total"], now),
        "lengths": {
            "assistant_turn_chars": tally.assistant_chars.to_dict(),
            "dialogue_chars": tally.dialogue_chars.to_dict(),
            "user_turns": tally.user_turns.to_dict(),
        },
        "distinct": {
            "overall": merge_distinct(list(tally.distinct_by_family.values())),
            "by_family": {k: v.to_dict() for k, v in sorted(tally.distinct_by_family.items())},
        },
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _histogram(title: str, hist: dict[str, Any]) -> list[str]:
    biggest = max((b["count"] for b in hist["buckets"]), default=0) or 1
    rows = [[b["range"], b["count"], "#" * round(BAR_WIDTH * b["count"] / biggest)] for b in hist["buckets"]]
    summary = f"{hist['count']} values · min {_num(hist['min'])} · mean {_num(hist['mean'])} · max "
    summary += _num(hist["max"])
    return ["", f"### {title}", "", summary, "", *_table(["range", "count", ""], rows)]


def _throughput(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Throughput", ""]
    session, run = report["session"], report["run"]
    if session:
        state = "interrupted" if session["interrupted"] else "finished"
        lines.append(
            f"- this session ({state}): {session['results']} results in {session['seconds']:.1f} s · "
            f"{session['results_per_s']} results/s · {session['tokens_per_s']} tokens/s · "
            f"{session['completion_tokens_per_s']} completion tokens/s"
        )
    if run:
        lines.append(
            f"- whole run since {run['created']} (pauses included): {run['seconds']} s · "
            f"{run['results_per_s']} results/s · {run['tokens_per_s']} tokens/s"
        )
    return lines if session or run else [*lines, "- no timing available"]


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown: summary, acceptance tables, tokens, throughput, lengths, diversity."""
    lines = [
        "# Run report",
        "",
        f"{report['accepted']} accepted of {report['total']} ({_pct(report['acceptance'])}); "
        f"near-duplicate rate {_pct(report['near_duplicate_rate'])}. Generated {report['generated_at']}.",
    ]
    if report["unreadable_lines"]:
        lines += ["", f"{report['unreadable_lines']} unreadable lines were skipped."]
    for title, key in (("kind", "by_kind"), ("family", "by_family"), ("world", "by_world")):
        rows = [
            [k, v["accepted"], v["rejected"], v["total"], _pct(v["acceptance"])]
            for k, v in report[key].items()
        ]
        lines += [
            "",
            f"## Acceptance by {title}",
            "",
            *_table([title, "accepted", "rejected", "total", "acceptance"], rows),
        ]
    reasons = [[k, v["count"], _pct(v["rate"])] for k, v in report["rejection_reasons"].items()]
    lines += ["", "## Rejection reasons", ""]
    lines += _table(["reason", "count", "of all finished"], reasons) if reasons else ["No rejections."]
    if report["check_violations"]:
        rules = [[k, v] for k, v in report["check_violations"].items()]
        lines += ["", "## Check violations (records per rule)", "", *_table(["rule", "records"], rules)]
    tokens = report["tokens"]
    per = tokens["per_accepted"]
    lines += ["", "## Tokens", ""]
    lines += _table(
        ["", "prompt", "completion", "total"],
        [
            ["whole run", tokens["prompt"], tokens["completion"], tokens["total"]],
            ["per accepted record", _num(per["prompt"]), _num(per["completion"]), _num(per["total"])],
        ],
    )
    lines += _throughput(report)
    lengths = report["lengths"]
    lines += ["", "## Lengths (accepted dialogues)"]
    lines += _histogram("Assistant turn, characters", lengths["assistant_turn_chars"])
    lines += _histogram("Whole dialogue (system included), characters", lengths["dialogue_chars"])
    lines += _histogram("User turns per dialogue", lengths["user_turns"])
    names = [f"distinct-{n}" for n in range(1, DISTINCT_N + 1)]
    distinct = report["distinct"]
    rows = [["overall", *(_num(distinct["overall"][k]) for k in names), distinct["overall"]["tokens"]]]
    rows += [[f, *(_num(d[k]) for k in names), d["tokens"]] for f, d in distinct["by_family"].items()]
    lines += [
        "",
        "## Diversity of assistant turns (accepted)",
        "",
        *_table(["family", *names, "words"], rows),
    ]
    return "\n".join(lines) + "\n"


def write_report(run_path: Path, stats: Any) -> dict[str, Any]:
    """Write report.json and report.md into the run directory and return the report."""
    report = build_report(run_path, stats)
    (run_path / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (run_path / "report.md").write_text(render_markdown(report))
    return report


def add_section(run_path: Path, key: str, data: Any, markdown: list[str]) -> None:
    """Add a section measured outside build_report (attack novelty, …) to report.json and report.md."""
    path = run_path / "report.json"
    report = orjson.loads(path.read_bytes())
    report[key] = data
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    with (run_path / "report.md").open("a") as fh:
        fh.write("\n" + "\n".join(markdown) + "\n")
