"""Live progress for a run: a rich bar on a terminal, plain log lines otherwise, and a summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

LOG_EVERY = 5.0  # seconds between plain log lines when stdout is not a terminal


def _rates(stats: Any) -> tuple[float, float]:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    return stats.done_this_session / elapsed, stats.completion_tokens_this_session / elapsed


def status_line(stats: Any, pool: Any) -> str:
    """One line of counters: done, accepted, rejected, rates, retries and the teacher's state."""
    per_s, tok_s = _rates(stats)
    pool_stats = pool.stats if pool is not None else {}
    state = pool.state if pool is not None else "starting"
    return (
        f"{stats.done}/{stats.total} done · {stats.accepted} accepted · {stats.rejected} rejected · "
        f"{per_s:.1f} req/s · {tok_s:.0f} tok/s · retries {pool_stats.get('retries', 0)} · "
        f"in-flight limit {pool_stats.get('inflight_limit', '-')} · teacher {state}"
    )


async def show_progress(stats: Any, get_pool: Callable[[], Any], console: Console) -> None:
    """Refresh the display until cancelled: a bar on a terminal, a log line every few seconds else."""
    if not console.is_terminal:
        while True:
            await anyio.sleep(LOG_EVERY)
            console.print(status_line(stats, get_pool()), highlight=False)
    columns = (
        TextColumn("[bold]generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[line]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        handle = bar.add_task("generate", total=stats.total, completed=stats.done, line="")
        try:
            while True:
                line = status_line(stats, get_pool()).split(" · ", 1)[1]
                bar.update(handle, completed=stats.done, total=stats.total, line=line)
                await anyio.sleep(0.2)
        finally:  # cancelled when the run ends: show the final counts, not the last tick's
            line = status_line(stats, get_pool()).split(" · ", 1)[1]
            bar.update(handle, completed=stats.done, total=stats.total, line=line)


def summary_table(stats: Any, run_path: str) -> Table:
    """The end-of-run summary: counts, rejection reasons, throughput and where the files are."""
    per_s, tok_s = _rates(stats)
    table = Table(title=f"run {run_path}", show_header=False)
    table.add_row("tasks", str(stats.total))
    table.add_row("accepted", str(stats.accepted))
    table.add_row("rejected", str(stats.rejected))
    for reason, count in sorted(stats.reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", str(count))
    table.add_row("results/s (this session)", f"{per_s:.1f}")
    table.add_row("completion tokens/s", f"{tok_s:.0f}")
    table.add_row("tokens in / out", f"{stats.prompt_tokens} / {stats.completion_tokens}")
    return table
