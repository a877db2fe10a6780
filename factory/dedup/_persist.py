"""Per-run signature files under <output>/.dedup/: written atomically, read back or reported unusable.

A file is a cache of what a run's accepted.jsonl implies, never the source of truth: it records how
many bytes of accepted.jsonl it covers, so a reader adds only the records appended since, and a
missing, torn or incompatible file is rebuilt from accepted.jsonl.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from factory.dedup._text import dialogue_text
from factory.store import ACCEPTED, record_id

DEDUP_DIR = ".dedup"
_TAIL_BLOCK = 1 << 16


@dataclass
class RunSignatures:
    """The stored sketches of one run: ids, exact keys, MinHash rows, and what they were built from."""

    ids: list[str]
    exact: np.ndarray  # uint64, one normalised-text key per record
    sigs: np.ndarray  # uint32, shape (records, num_perm)
    meta: dict[str, Any]  # sketch parameters plus "accepted_bytes"


def signature_path(output_dir: Path, run_name: str) -> Path:
    """Where a run's signature file lives."""
    return output_dir / DEDUP_DIR / f"{run_name}.npz"


def accepted_path(output_dir: Path, run_name: str) -> Path:
    """A run's accepted.jsonl."""
    return output_dir / run_name / ACCEPTED


def run_names(output_dir: Path) -> list[str]:
    """Every run folder in output_dir that has an accepted.jsonl, by name."""
    if not output_dir.is_dir():
        return []
    return sorted(
        p.name for p in output_dir.iterdir() if not p.name.startswith(".") and (p / ACCEPTED).is_file()
    )


def read_signatures(path: Path) -> RunSignatures | None:
    """A run's stored signatures, or None when the file is missing, torn or inconsistent."""
    try:
        # Our own handle: np.load leaks the one it opens when the zip is torn.
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            ids = data["ids"].tolist()
            exact = data["exact"]
            sigs = data["sigs"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(meta, dict) or sigs.ndim != 2 or not len(ids) == len(exact) == len(sigs):
        return None
    return RunSignatures(ids, exact, sigs, meta)


def write_signatures(path: Path, stored: RunSignatures) -> None:
    """Replace a run's signature file in one step: a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                ids=np.array(stored.ids, dtype=str),
                exact=np.asarray(stored.exact, dtype=np.uint64),
                sigs=np.asarray(stored.sigs, dtype=np.uint32),
                meta=np.frombuffer(json.dumps(stored.meta).encode(), dtype=np.uint8),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # The rename itself is only durable once the folder is synced.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reusable_from(
    signature_file: Path, accepted: Path, params: dict[str, Any]
) -> tuple[RunSignatures | None, int, int]:
    """(stored signatures or None, byte offset to read accepted.jsonl from, its complete size).

    Stored rows are reused when they were made with the same parameters and accepted.jsonl still
    holds what they describe; otherwise (missing, torn, other parameters, a cut file) everything is
    rebuilt from byte 0.
    """
    end = complete_size(accepted)
    stored = read_signatures(signature_file)
    usable = stored is not None and all(stored.meta.get(k) == v for k, v in params.items())
    start = stored.meta.get("accepted_bytes", -1) if stored is not None and usable else -1
    if not 0 <= start <= end:
        return None, 0, end
    return stored, start, end


def complete_size(path: Path) -> int:
    """Bytes of a JSONL file up to and including its last newline (0 if missing): a torn line is not data."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def read_dialogues(path: Path, start: int, end: int) -> Iterator[tuple[str, str]]:
    """(id, dialogue text) of each accepted record between two line-boundary byte offsets."""
    if end <= start:
        return
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start
        for line in fh:
            left -= len(line)
            try:
                record = orjson.loads(line)
                found = record_id(record), dialogue_text(record["messages"])
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                found = None  # a blank or foreign line: checking it is not dedup's job
            if found is not None:
                yield found
            if left <= 0:
                break
