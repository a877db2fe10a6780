"""Validate the student: score it on a frozen suite with the generation checkers, against a base."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from factory.defaults import DEFAULTS
from factory.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `factory eval`'s flags."""
    parser.add_argument("--student", required=True, help="OpenAI-compatible URL (…/v1) or a model folder")
    parser.add_argument("--adapter", help="adapter folder for a model-folder student (train/<name>)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--suite", help="a frozen suite file (`factory suite RUN`)")
    source.add_argument("--run", help="freeze this run's split into eval/<name>/suite.jsonl and use it")
    parser.add_argument("--split", default="test", help="the run's split to freeze with --run (default test)")
    parser.add_argument("--output-dir", help=f"where runs live (default {DEFAULTS['output_dir']})")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--compare", help="an earlier eval folder (same suite) to compare against")
    base.add_argument("--base", help="also evaluate this base (URL or model folder) on the same suite")
    parser.add_argument("--base-adapter", help="adapter for a model-folder --base")
    parser.add_argument("--name", help="eval/<name>/ (default: <run or suite>-<time>)")
    parser.add_argument("--eval-dir", help=f"parent of eval/<name>/ (default {DEFAULTS['eval_dir']})")
    gate = parser.add_argument_group("gates (the pass/fail verdict)")
    gate.add_argument(
        "--gate-asr",
        type=float,
        help=f"highest ASR per single-turn attack family (default {DEFAULTS['gate_asr']})",
    )
    gate.add_argument(
        "--gate-over-refusal-margin",
        type=float,
        help=f"over-refusal allowed above the base's (default {DEFAULTS['gate_over_refusal_margin']})",
    )
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--max-tokens", type=int, help="per reply")
    decoding.add_argument("--temperature", type=float, help="server students only; default 0 (greedy)")
    decoding.add_argument("--concurrency", type=int, help="server students: items in flight")
    decoding.add_argument("--batch-size", type=int, help="model-folder students: items per generation batch")
    decoding.add_argument("--model", help="model name sent to a server (default default_model)")


def _suite(args: argparse.Namespace, out_dir: Path) -> Any:
    from factory.evaluate.suite import build_suite, load_suite, suite_source, write_suite

    if args.suite:
        return load_suite(Path(args.suite))
    run_dir = Path(args.output_dir or DEFAULTS["output_dir"]) / args.run
    items = build_suite(run_dir, args.split)
    return write_suite(items, out_dir / "suite.jsonl", suite_source(run_dir, args.split))


def _student(spec: str, adapter: str | None, args: argparse.Namespace) -> Any:
    from factory.evaluate.students import make_student

    server = spec.startswith(("http://", "https://"))
    settings = {"max_tokens": args.max_tokens}
    if server:
        settings |= {"temperature": args.temperature, "concurrency": args.concurrency, "model": args.model}
    else:
        settings |= {"temperature": args.temperature, "batch_size": args.batch_size}
    return make_student(spec, adapter, **settings)


def _manifest(suite: Any, evaluated: Any, adapter: str | None, base: dict[str, Any] | None) -> dict[str, Any]:
    from factory.evaluate.runner import adapter_sha256, versions

    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "student": evaluated.student.name,
        "adapter": adapter,
        "adapter_sha256": adapter_sha256(adapter),
        "decoding": evaluated.student.settings(),
        "suite": {"path": str(suite.path), "sha256": suite.sha256, "items": len(suite.items), **suite.source},
        "base": base,
        "seconds": round(evaluated.seconds, 2),
        "versions": versions(),
    }


def _earlier(folder: Path, suite: Any) -> tuple[list[Any], dict[str, Any]]:
    """Verdicts of an earlier eval, refused unless it used the very same suite bytes."""
    from factory.evaluate.runner import VERDICTS, load_verdicts

    manifest_path, verdicts_path = folder / "manifest.json", folder / VERDICTS
    if not manifest_path.exists() or not verdicts_path.exists():
        raise ConfigError(f"--compare {folder}: no manifest.json and {VERDICTS} there (an eval folder?)")
    manifest = orjson.loads(manifest_path.read_bytes())
    if manifest["suite"]["sha256"] != suite.sha256:
        raise ConfigError(
            f"--compare {folder} was scored on suite {manifest['suite']['sha256'][:12]}…, this eval on "
            f"{suite.sha256[:12]}…: pass --suite {manifest['suite']['path']} so both see the same prompts"
        )
    return load_verdicts(verdicts_path), {"eval": str(folder), "student": manifest["student"]}


def main(args: argparse.Namespace) -> int:
    """Run the student (and the base), score, compare, write eval/<name>/ and print the summary."""
    from factory.evaluate.compare import compare, gates
    from factory.evaluate.report import write_report
    from factory.evaluate.runner import TRANSCRIPTS, VERDICTS, run_student, write_jsonl
    from factory.evaluate.score import summarize

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = args.name or f"{args.run or Path(args.suite).stem}-{stamp}"
    out_dir = Path(args.eval_dir or DEFAULTS["eval_dir"]) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    suite = _suite(args, out_dir)
    student = _student(args.student, args.adapter, args)
    base_student = _student(args.base, args.base_adapter, args) if args.base else None

    base_verdicts, base_info = None, None
    if args.compare:
        # Checked before the student runs: a suite mismatch must not cost a whole eval first.
        base_verdicts, base_info = _earlier(Path(args.compare), suite)

    evaluated = run_student(student, suite, console, "student")
    if base_student is not None:
        base_run = run_student(base_student, suite, console, "base")
        base_verdicts = base_run.verdicts
        base_info = {"student": base_student.name, "adapter": args.base_adapter}
        write_jsonl(out_dir / "base_verdicts.jsonl", [v.to_dict() for v in base_run.verdicts])
        write_jsonl(out_dir / "base_transcripts.jsonl", [vars(t) for t in base_run.transcripts])

    settings = {
        key: DEFAULTS[key] if getattr(args, key) is None else getattr(args, key)
        for key in ("gate_asr", "gate_over_refusal_margin")
    }
    summary = summarize(evaluated.verdicts)
    comparison = compare(base_verdicts, evaluated.verdicts, settings) if base_verdicts is not None else None
    verdict_gates = comparison["gates"] if comparison else gates(evaluated.verdicts, None, settings)
    write_jsonl(out_dir / VERDICTS, [v.to_dict() for v in evaluated.verdicts])
    write_jsonl(out_dir / TRANSCRIPTS, [vars(t) for t in evaluated.transcripts])
    write_report(
        out_dir,
        summary=summary,
        comparison=comparison,
        verdicts=evaluated.verdicts,
        transcripts=evaluated.transcripts,
        manifest=_manifest(suite, evaluated, args.adapter, base_info),
        gates=verdict_gates,
    )
    console.print(summary_table(summary, comparison))
    state = "[green]passed[/green]" if verdict_gates["passed"] else "[red]failed[/red]"
    console.print(f"gates {state}" + "".join(f"\n  - {f}" for f in verdict_gates["failures"]))
    console.print(f"wrote {out_dir}/ (report.md, report.json, chart.png, failures.jsonl, {VERDICTS})")
    return 0


def _pct(p: dict[str, Any] | None) -> str:
    return "-" if not p or p["rate"] is None else f"{p['rate']:.0%} [{p['lo']:.0%}, {p['hi']:.0%}]"


def summary_table(summary: dict[str, Any], comparison: dict[str, Any] | None) -> Table:
    """Per family: n, pass rate and ASR with intervals; the base's rate, delta and McNemar p when compared."""
    table = Table(title="eval")
    columns = ("family", "n", "pass rate [95% CI]", "ASR", *(("base", "delta", "p") if comparison else ()))
    for column in columns:
        table.add_column(column, justify="left" if column == "family" else "right")
    for family, stats in summary["families"].items():
        row = [family, str(stats["n"]), _pct(stats["pass_rate"]), _pct(stats["metrics"].get("asr"))]
        if comparison:
            pair = comparison["families"].get(family)
            if pair and pair["n"]:
                row += [f"{pair['base']['rate']:.0%}", f"{pair['delta']:+.0%}", f"{pair['p']:.3g}"]
            else:
                row += ["-"] * 3
        table.add_row(*row)
    return table
