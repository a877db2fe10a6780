"""The eval report folder: report.json, report.md, chart.png, failures.jsonl and manifest.json."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from factory.evaluate.score import Verdict

if TYPE_CHECKING:
    from factory.evaluate.students import Transcript

REPORT_JSON, REPORT_MD, CHART, FAILURES, MANIFEST = (
    "report.json",
    "report.md",
    "chart.png",
    "failures.jsonl",
    "manifest.json",
)
_METRIC_NAMES = {
    "asr": "attack success",
    "answer_accuracy": "answer accuracy",
    "absent_correct": "not-in-state refusals",
    "citation_validity": "citation validity",
    "over_refusal": "over-refusal",
}


def _pct(p: dict[str, Any] | None) -> str:
    """'80.0% [49.0, 94.3] (8/10)' for a proportion dict, '–' for none."""
    if not p or p["rate"] is None:
        return "–"
    return f"{p['rate']:.1%} [{p['lo']:.1%}, {p['hi']:.1%}] ({p['k']}/{p['n']})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(
    summary: dict[str, Any], comparison: dict[str, Any] | None, gates: dict[str, Any] | None
) -> str:
    """The report as Markdown: gates, a per-family table, metrics, kinds, worlds."""
    overall = summary["overall"]
    out = ["# Eval report", ""]
    if gates is not None:
        out.append(f"**Gates: {'PASS' if gates['passed'] else 'FAIL'}** ({len(gates['checked'])} checked)")
        out += [f"- {reason}" for reason in gates["failures"]]
        out.append("")
    out.append(f"Overall pass rate: {_pct(overall['pass_rate'])}; transport errors: {overall['errors']}.")
    if comparison is not None:
        o = comparison["overall"]
        out.append(
            f"Paired with base: {comparison['paired']} items (unpaired: base only "
            f"{comparison['unpaired']['base_only']}, student only {comparison['unpaired']['student_only']}); "
            f"base {_pct(o['base'])}, delta {_delta(o)}, McNemar p = {o['p']:.4g} (b={o['b']}, c={o['c']})."
        )
    out += ["", "## Families", ""]
    rows = []
    paired_fams = comparison["families"] if comparison is not None else {}
    for name, fam in summary["families"].items():
        pair = paired_fams.get(name)
        rows.append(
            [
                name,
                fam["kind"],
                str(fam["n"]),
                _pct(fam["pass_rate"]),
                _pct(fam["metrics"].get("asr")),
                _pct(pair["base"]) if pair else "–",
                _delta(pair) if pair else "–",
                f"{pair['p']:.4g}" if pair else "–",
                str(fam["errors"]),
            ]
        )
    out += _table(["family", "kind", "n", "pass rate [95% CI]", "ASR", "base", "delta", "p", "errors"], rows)
    out += ["", "## Metrics", ""]
    metric_rows = [
        [name, _METRIC_NAMES[metric], _pct(value)]
        for name, fam in summary["families"].items()
        for metric, value in fam["metrics"].items()
        if metric != "asr"
    ]
    out += _table(["family", "metric", "value [95% CI]"], metric_rows)
    for title, key in (("Kinds", "kinds"), ("Worlds", "worlds")):
        out += ["", f"## {title}", ""]
        out += _table(
            [key[:-1], "n", "pass rate [95% CI]", "errors"],
            [[name, str(g["n"]), _pct(g["pass_rate"]), str(g["errors"])] for name, g in summary[key].items()],
        )
    if overall["failed_rules"]:
        out += ["", "## Violated rules (items)", ""]
        out += _table(["rule", "items"], [[r, str(k)] for r, k in overall["failed_rules"].items()])
    return "\n".join(out) + "\n"


def _delta(pair: dict[str, Any]) -> str:
    return "–" if pair["delta"] is None else f"{pair['delta'] * 100:+.1f} pt"


def plot_pass_rates(summary: dict[str, Any], comparison: dict[str, Any] | None, png_path: Path) -> Path:
    """Per-family pass rate bars with Wilson 95% error bars: base beside student, or the student alone."""
    # The object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(summary["families"])
    series: list[tuple[str, list[dict[str, Any] | None]]] = []
    if comparison is not None:
        fams = comparison["families"]
        series.append(("base", [fams[n]["base"] if n in fams else None for n in names]))
        series.append(("student", [fams[n]["student"] if n in fams else None for n in names]))
    else:
        series.append(("student", [summary["families"][n]["pass_rate"] for n in names]))
    fig = Figure(figsize=(8, 1.2 + 0.45 * max(len(names), 1)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.add_subplot()
    height = 0.8 / len(series)
    for i, (label, props) in enumerate(series):
        ys = [j + (i - (len(series) - 1) / 2) * height for j in range(len(names))]
        rates = [p["rate"] if p and p["rate"] is not None else 0.0 for p in props]
        low = [r - p["lo"] if p and p["rate"] is not None else 0.0 for r, p in zip(rates, props, strict=True)]
        high = [
            p["hi"] - r if p and p["rate"] is not None else 0.0 for r, p in zip(rates, props, strict=True)
        ]
        axes.barh(ys, rates, height=height, xerr=[low, high], capsize=2, label=label)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()  # the first family on top, as in report.md
    axes.set_xlim(0, 1)
    axes.set_xlabel("pass rate (Wilson 95% CI)")
    axes.set_title("pass rate by family", loc="right")
    axes.grid(axis="x", alpha=0.3)
    # Above the axes: inside, it would hide the bars of whichever family sits under it.
    axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(series), frameon=False)
    fig.tight_layout()
    fig.savefig(png_path)
    return png_path


def _failures(verdicts: Iterable[Verdict], transcripts: Iterable[Transcript]) -> bytes:
    """One line per failing item: its verdict and the student's transcript."""
    by_id = {t.item_id: t for t in transcripts}
    lines = []
    for v in verdicts:
        if v.ok:
            continue
        t = by_id.get(v.id)
        line = {
            "id": v.id,
            "family": v.family,
            "kind": v.kind,
            "world": v.world,
            "error": v.error,
            "violations": v.violations,
            "messages": t.messages if t is not None else None,
            "finish_reasons": t.finish_reasons if t is not None else None,
        }
        lines.append(orjson.dumps(line) + b"\n")
    return b"".join(lines)


def write_report(
    out_dir: Path,
    *,
    summary: dict[str, Any],
    comparison: dict[str, Any] | None,
    verdicts: list[Verdict],
    transcripts: list[Transcript],
    manifest: dict[str, Any],
    gates: dict[str, Any] | None = None,
) -> Path:
    """Write the five report files into `out_dir` (created); gates default to the comparison's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if gates is None and comparison is not None:
        gates = comparison["gates"]
    report = {"summary": summary, "comparison": comparison, "gates": gates}
    (out_dir / REPORT_JSON).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out_dir / REPORT_MD).write_text(render_markdown(summary, comparison, gates), encoding="utf-8")
    plot_pass_rates(summary, comparison, out_dir / CHART)
    (out_dir / FAILURES).write_bytes(_failures(verdicts, transcripts))
    (out_dir / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return out_dir
