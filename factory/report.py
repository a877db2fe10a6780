"""The run report: report.json and report.md, built from the run's files so resumes are counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from factory.store import ACCEPTED, REJECTED, read_jsonl


def build_report(run_path: Path, stats: Any) -> dict[str, Any]:
    """Count accepted and rejected records by kind, family, world and rejection reason."""
    accepted = read_jsonl(run_path / ACCEPTED)
    rejected = read_jsonl(run_path / REJECTED)
    total = len(accepted) + len(rejected)
    by: dict[str, dict[str, dict[str, int]]] = {"kind": {}, "family": {}, "template": {}}
    for status, records in (("accepted", accepted), ("rejected", rejected)):
        for record in records:
            for key, table in by.items():
                row = table.setdefault(record["meta"].get(key, "?"), {"accepted": 0, "rejected": 0})
                row[status] += 1
    reasons = Counter(r["reason"] for r in rejected)
    tokens = Counter()
    for record in accepted + rejected:
        tokens.update(record["meta"].get("usage", {}))
    return {
        "total": total,
        "accepted": len(accepted),
        "rejected": len(rejected),
        "acceptance": round(len(accepted) / total, 4) if total else None,
        "rejection_reasons": dict(reasons.most_common()),
        "by_kind": by["kind"],
        "by_family": by["family"],
        "by_world": by["template"],
        "tokens": dict(tokens),
        "session": {
            "results": stats.done_this_session,
            "interrupted": stats.interrupted,
        },
    }


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown tables."""
    lines = [
        "# Run report",
        "",
        f"{report['accepted']} accepted of {report['total']} ({(report['acceptance'] or 0):.1%}).",
        "",
        "## Rejection reasons",
        "",
        "| reason | count |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report["rejection_reasons"].items()),
    ]
    for title, key in (("Kind", "by_kind"), ("Family", "by_family"), ("World", "by_world")):
        lines += ["", f"## By {title.lower()}", "", f"| {title} | accepted | rejected |", "|---|---|---|"]
        lines += [f"| {k} | {v['accepted']} | {v['rejected']} |" for k, v in sorted(report[key].items())]
    return "\n".join(lines) + "\n"


def write_report(run_path: Path, stats: Any) -> dict[str, Any]:
    """Write report.json and report.md into the run directory and return the report."""
    report = build_report(run_path, stats)
    (run_path / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (run_path / "report.md").write_text(render_markdown(report))
    return report
