"""Helpers for tests that run `factory` as a real subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


def factory_command(*args: str) -> list[str]:
    """The argv that runs the factory CLI with this interpreter."""
    return [sys.executable, "-m", "factory.cli", *args]


def run_factory(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the factory CLI to completion and capture its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        factory_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


def start_factory(*args: str) -> subprocess.Popen[str]:
    """Start the factory CLI in the background."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        factory_command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file (empty list when missing)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def record_ids(run: Path) -> list[str]:
    """Every task id written to accepted.jsonl and rejected.jsonl, duplicates kept."""
    accepted = [r["meta"]["id"] for r in read_jsonl(run / "accepted.jsonl")]
    rejected = [r["id"] for r in read_jsonl(run / "rejected.jsonl")]
    return accepted + rejected


def line_count(path: Path) -> int:
    """Number of complete lines in a file (0 when missing)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0
