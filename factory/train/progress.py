"""Training progress: every mlx_lm report goes to metrics.jsonl and to a live status line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from mlx_lm.tuner.callbacks import TrainingCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def status_text(state: dict[str, Any]) -> str:
    """The numbers a person watches: losses, speed, memory."""
    parts = []
    if state.get("train_loss") is not None:
        parts.append(f"train {state['train_loss']:.3f}")
    if state.get("val_loss") is not None:
        parts.append(f"val {state['val_loss']:.3f}")
    if state.get("tokens_per_second") is not None:
        parts.append(f"{state['tokens_per_second']:,.0f} tok/s")
    if state.get("peak_memory") is not None:
        parts.append(f"peak {state['peak_memory']:.2f} GB")
    return " · ".join(parts)


class TrainProgress(TrainingCallback):
    """mlx_lm callback: appends each report to `metrics_path` and shows it live.

    On a terminal it runs a rich bar (iteration, losses, tokens/s, peak memory, ETA) that nests with
    mlx_lm's own bar on the same console; otherwise it prints one plain line per report.
    """

    def __init__(self, metrics_path: Path, iters: int, console: Console):
        self.metrics_path = metrics_path
        self.iters = iters
        self.console = console
        self.state: dict[str, Any] = {"iteration": 0}
        self.reports: list[dict[str, Any]] = []
        self._file = metrics_path.open("wb")  # a new run (or --overwrite) starts a new log
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> TrainProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]factory train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.iters, line="loading")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._file.close()

    def _record(self, kind: str, info: dict[str, Any]) -> None:
        row = {"type": kind, "elapsed": round(time.monotonic() - self._started, 3), **info}
        self.reports.append(row)
        # One line per report, written through: a killed run keeps every report it made.
        self._file.write(orjson.dumps(row) + b"\n")
        self._file.flush()
        self.state.update({k: v for k, v in info.items() if k != "iteration"})
        self.state["iteration"] = max(self.state["iteration"], int(info.get("iteration", 0)))
        line = status_text(self.state)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.state["iteration"], line=line)
        else:
            self.console.print(f"iter {self.state['iteration']}/{self.iters} · {line}", highlight=False)

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        """Called by mlx_lm every `steps_per_report` iterations."""
        self._record("train", train_info)

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        """Called by mlx_lm at the first iteration, every `steps_per_eval`, and at the end."""
        self._record("val", val_info)
