"""Export a run to an mlx_lm data folder: output/<run>/data/{train,valid,test}.jsonl and the named files."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factory.defaults import DEFAULTS
from factory.export import KINDS, SPLITS, ExportSummary, export_run, parse_ratios
from factory.holdout import resolve_holdout
from factory.store import read_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the export flags."""
    parser.add_argument("run", help="run name under the output folder")
    parser.add_argument("--output-dir", help=f"where runs are (default {DEFAULTS['output_dir']}/)")
    parser.add_argument(
        "--ratios",
        help="train,valid,test shares of the records, split by (world, family) "
        f"(default {DEFAULTS['split_ratios']})",
    )
    parser.add_argument("--seed", type=int, help="seed of the split (default: the run's seed)")
    add_holdout_argument(parser, "default: the run's own, from generate; 'none' for no holdout")


def add_holdout_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """Add --holdout (shared with generate, which passes it to its export)."""
    parser.add_argument(
        "--holdout",
        metavar="SPEC",
        help="keep families and/or worlds out of train and valid: every (world, family) group with a "
        "held-out one goes to test only. SPEC is 'families=a,b;worlds=w' (quote it: ';' ends a shell "
        f"command); either part may be left out ({default})",
    )


def export_table(summary: ExportSummary) -> Table:
    """A table of groups, dialogues, samples and kinds per split, for `export` and the end of `generate`."""
    table = Table(title=f"export {summary.data_dir}")
    for column in ("split", "groups", "records", "samples", *KINDS):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name in SPLITS:
        counts = summary.splits[name]
        kinds = [str(counts.by_kind.get(kind, 0)) for kind in KINDS]
        table.add_row(name, str(counts.groups), str(counts.records), str(counts.samples), *kinds)
    return table


def main(args: argparse.Namespace) -> int:
    """Run `factory export`."""
    run_dir = Path(args.output_dir or DEFAULTS["output_dir"]) / args.run
    ratios = parse_ratios(args.ratios or DEFAULTS["split_ratios"])
    stored = (read_run_config(run_dir) if run_dir.is_dir() else None) or {}
    seed = args.seed if args.seed is not None else stored.get("seed") or 0
    holdout_text = args.holdout if args.holdout is not None else stored.get("holdout")
    holdout = resolve_holdout(holdout_text, stored.get("seeds_dir") or DEFAULTS["seeds_dir"])
    console = Console()
    print_export(export_run(run_dir, ratios=ratios, seed=seed, holdout=holdout), console)
    return 0


def print_export(summary: ExportSummary, console: Console) -> None:
    """Print the split table, the named files, any warnings and where the data folder is."""
    console.print(export_table(summary))
    named = " · ".join(f"{name} {count}" for name, count in summary.files.items())
    console.print(f"full dialogues: {named}", highlight=False)
    if summary.holdout is not None:
        console.print(
            f"held out ({summary.holdout.text()}): {summary.held_groups} groups, "
            f"{summary.held_records} records, all in test",
            highlight=False,
        )
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"wrote {summary.data_dir} (manifest.json has the group assignment)", highlight=False)
