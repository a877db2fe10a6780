"""Check any chat JSONL against the rules: a verdict per line, pass rates per rule and per family."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factory.checkfile import CheckSummary, check_file, parse_rules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the check flags."""
    parser.add_argument("file", help="chat JSONL: one {'messages': [...], 'meta'?: {...}} a line")
    parser.add_argument("--out", help="verdicts JSONL (default: FILE's stem + .verdicts.jsonl beside it)")
    parser.add_argument("--rules", help="comma-separated rules to run (default: all)")


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def rule_table(summary: CheckSummary) -> Table:
    """Pass rate per rule: the share of dialogues with no violation of it."""
    table = Table(title="pass rate per rule")
    for column in ("rule", "failing", "pass rate"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, failing, rate in summary.rule_rows():
        table.add_row(name, str(failing), _percent(rate))
    return table


def family_table(summary: CheckSummary) -> Table:
    """Pass rate per family (meta.family, '?' without one), with a total row."""
    table = Table(title="pass rate per family")
    for column in ("family", "dialogues", "ok", "pass rate"):
        table.add_column(column, justify="left" if column == "family" else "right")
    for family, total, ok, rate in summary.family_rows():
        table.add_row(family, str(total), str(ok), _percent(rate))
    rate = summary.ok / summary.total if summary.total else 1.0
    table.add_section()
    table.add_row("total", str(summary.total), str(summary.ok), _percent(rate))
    return table


def main(args: argparse.Namespace) -> int:
    """Run `factory check`; exit 0 whenever the file was checked, however many dialogues fail."""
    rules = parse_rules(args.rules)
    started = time.perf_counter()
    summary = check_file(Path(args.file), Path(args.out) if args.out else None, rules)
    seconds = time.perf_counter() - started
    console = Console()
    console.print(rule_table(summary))
    console.print(family_table(summary))
    console.print(
        f"checked {summary.total} dialogues in {seconds:.1f}s: {summary.ok} ok, "
        f"{summary.total - summary.ok} with violations · verdicts in {summary.out}",
        highlight=False,
    )
    return 0
