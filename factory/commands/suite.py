"""Freeze one split of a run (default: test) into an eval suite file and print its sha256."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factory.defaults import DEFAULTS
from factory.evaluate.suite import Suite, build_suite, suite_source, write_suite
from factory.export import SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite flags."""
    parser.add_argument("run", help="run name under the output folder (exported with `factory export`)")
    parser.add_argument("--split", choices=SPLITS, help="which split to freeze (default test)")
    parser.add_argument("--out", help=f"suite file (default {DEFAULTS['suite_dir']}/RUN-SPLIT.jsonl)")
    parser.add_argument("--output-dir", help=f"where runs are (default {DEFAULTS['output_dir']}/)")


def family_table(suite: Suite) -> Table:
    """Items per family and kind, with a total row."""
    table = Table(title=f"suite {suite.path}")
    for column in ("family", "kind", "items"):
        table.add_column(column, justify="right" if column == "items" else "left")
    counts = Counter((item.family, item.kind) for item in suite.items)
    for (family, kind), n in sorted(counts.items()):
        table.add_row(family, kind, str(n))
    table.add_section()
    table.add_row("total", "", str(len(suite.items)))
    return table


def main(args: argparse.Namespace) -> int:
    """Run `factory suite`."""
    split = args.split or "test"
    run_dir = Path(args.output_dir or DEFAULTS["output_dir"]) / args.run
    out = Path(args.out) if args.out else Path(DEFAULTS["suite_dir"]) / f"{args.run}-{split}.jsonl"
    suite = write_suite(build_suite(run_dir, split), out, suite_source(run_dir, split))
    console = Console()
    console.print(family_table(suite))
    holdout = suite.source.get("holdout")
    if holdout:
        held = ", ".join(f"{key} {','.join(holdout[key])}" for key in ("families", "worlds") if holdout[key])
        console.print(f"held out of train and valid: {held}", highlight=False)
    console.print(f"wrote {out} · {len(suite.items)} items", highlight=False)
    console.print(f"sha256 {suite.sha256}", highlight=False)
    return 0
