"""One eval: put a suite to a student, score every transcript, and keep what a report needs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from factory.evaluate.score import Verdict, score
from factory.evaluate.students import Student, Transcript
from factory.evaluate.suite import Suite

VERDICTS = "verdicts.jsonl"  # every verdict, so a later eval can --compare against this one
TRANSCRIPTS = "transcripts.jsonl"


@dataclass
class EvalRun:
    """A student's transcripts and verdicts on a suite, in suite order."""

    student: Student
    transcripts: list[Transcript]
    verdicts: list[Verdict]
    seconds: float


def run_student(student: Student, suite: Suite, console: Console, label: str = "eval") -> EvalRun:
    """Answer every suite item with `student` (progress on `console`) and score each transcript."""
    by_id: dict[str, Transcript] = {}
    started = time.monotonic()
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[line]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bar:
        handle = bar.add_task(label, total=len(suite.items), line="")

        def done(transcript: Transcript) -> None:
            by_id[transcript.item_id] = transcript
            errors = sum(1 for t in by_id.values() if t.error)
            bar.update(handle, completed=len(by_id), line=f"errors {errors}")

        anyio.run(student.run, suite.items, done)
    transcripts = [by_id[item.id] for item in suite.items if item.id in by_id]
    missing = [item.id for item in suite.items if item.id not in by_id]
    transcripts += [Transcript(item_id=i, messages=[], finish_reasons=[], error="no reply") for i in missing]
    items = {item.id: item for item in suite.items}
    verdicts = [score(items[t.item_id], t) for t in transcripts]
    return EvalRun(student, transcripts, verdicts, time.monotonic() - started)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One orjson line per row."""
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def load_verdicts(path: Path) -> list[Verdict]:
    """Read a verdicts.jsonl an earlier eval wrote."""
    with path.open("rb") as fh:
        return [Verdict.from_dict(orjson.loads(line)) for line in fh if line.strip()]


def adapter_sha256(adapter: str | None) -> str | None:
    """sha256 of the adapter weights, so a report names exactly which adapter it measured."""
    if adapter is None:
        return None
    digest = hashlib.sha256()
    with (Path(adapter) / "adapters.safetensors").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    """Installed versions of what shapes a result."""
    found: dict[str, str | None] = {}
    for name in ("state-factory", "mlx", "mlx-lm", "openai"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
