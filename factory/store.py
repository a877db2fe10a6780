"""The run directory: run.json, append-only accepted/rejected JSONL, the ledger, resume.

Durability model: one writer appends a record to accepted.jsonl or rejected.jsonl, then its id to
ledger.jsonl. Each line goes to the OS at once (unbuffered), so a SIGKILL loses only what was in
flight; fsync runs every few records, for power loss. After a crash the tail of a file may hold a
torn line; `open_run` cuts it off, and a record whose ledger line was lost still counts as finished
because finished ids are read from the records as well as from the ledger.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from factory.errors import ConfigError

RUN_FILE = "run.json"
ACCEPTED = "accepted.jsonl"
REJECTED = "rejected.jsonl"
LEDGER = "ledger.jsonl"

# Settings that shape the data: changing one of them on resume would silently mix two datasets.
DATA_SETTINGS = (
    "seed", "mix", "teacher_kind", "model", "temperature", "max_tokens", "parse_attempts",
    "transform_rate", "transform_chain_max", "transforms", "written_attacks",
)  # fmt: skip
# What a run.json written before a data setting existed was planned with.
UNSET_MEANS: dict[str, Any] = {
    "transform_rate": 0.0, "transform_chain_max": 2, "transforms": "all", "written_attacks": False,
}  # fmt: skip


def _cut_torn_tail(path: Path) -> int:
    """Truncate a JSONL file after its last complete line; return the bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return 0
    with path.open("r+b") as fh:
        fh.truncate(end)
    return len(data) - end


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping blank lines."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


@dataclass
class RunDir:
    """An open run directory with the ids already finished in it."""

    path: Path
    config: dict[str, Any]
    finished: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0})
    resumed: bool = False

    def file(self, name: str) -> Path:
        """Return the path of a file inside the run directory."""
        return self.path / name


def _setting(config: dict[str, Any], key: str) -> Any:
    return config.get(key, UNSET_MEANS.get(key))


def _changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{key}: was {_setting(old, key)!r}, now {_setting(new, key)!r}"
        for key in (*DATA_SETTINGS, "seeds_hash", "prompt_hash")
        if _setting(old, key) != _setting(new, key)
    ]


def read_run_config(path: Path) -> dict[str, Any] | None:
    """Return a run's stored run.json, or None when the run does not exist yet."""
    run_json = path / RUN_FILE
    return orjson.loads(run_json.read_bytes()) if run_json.exists() else None


def open_run(path: Path, config: dict[str, Any]) -> RunDir:
    """Create a run directory, or reopen one to resume after checking its settings match."""
    run_json = path / RUN_FILE
    if not run_json.exists():
        path.mkdir(parents=True, exist_ok=True)
        run_json.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        return RunDir(path=path, config=config)

    old = orjson.loads(run_json.read_bytes())
    changed = _changed_settings(old, config)
    if changed:
        raise ConfigError(
            f"run {path.name!r} was started with other settings, and resuming would mix two datasets:\n  "
            + "\n  ".join(changed)
            + "\nResume with the original settings, or start a new run with another --run name."
        )
    if config.get("n", 0) > old.get("n", 0):
        # The plan is prefix-stable, so a larger n extends the run with new tasks only.
        old["n"] = config["n"]
        run_json.write_bytes(orjson.dumps(old, option=orjson.OPT_INDENT_2))

    run = RunDir(path=path, config=old, resumed=True)
    for name in (ACCEPTED, REJECTED, LEDGER):
        _cut_torn_tail(path / name)
    for line in read_jsonl(path / LEDGER):
        run.finished.add(line["id"])
    for name, status in ((ACCEPTED, "accepted"), (REJECTED, "rejected")):
        for record in read_jsonl(path / name):
            run.finished.add(record_id(record))
            run.counts[status] += 1
    return run


def record_id(record: dict[str, Any]) -> str:
    """Return the task id of an accepted or rejected record."""
    return record.get("id") or record["meta"]["id"]


class RunWriter:
    """The single writer of a run's JSONL files; appends, batches fsyncs, never rewrites."""

    def __init__(self, run: RunDir, flush_every: int):
        self.run = run
        self.flush_every = flush_every
        self._pending = 0
        self._files: dict[str, BinaryIO] = {
            name: run.file(name).open("ab", buffering=0) for name in (ACCEPTED, REJECTED, LEDGER)
        }

    def write(self, status: str, record: dict[str, Any]) -> None:
        """Append one finished task (status 'accepted' or 'rejected') and ledger its id."""
        task_id = record_id(record)
        name = ACCEPTED if status == "accepted" else REJECTED
        self._files[name].write(orjson.dumps(record) + b"\n")
        self._files[LEDGER].write(orjson.dumps({"id": task_id, "status": status}) + b"\n")
        self.run.finished.add(task_id)
        self.run.counts[status] += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Fsync every file, data files before the ledger."""
        if not self._pending:
            return
        for fh in self._files.values():
            os.fsync(fh.fileno())
        self._pending = 0

    def close(self) -> None:
        """Flush and close the files."""
        self.flush()
        for fh in self._files.values():
            fh.close()
