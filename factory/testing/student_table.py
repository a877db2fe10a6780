"""The reply table of the test student: which reply each exact conversation gets.

A table is JSONL (one entry a line) or JSON (a list of entries); an entry is
`{"messages": [...], "reply": "...", "finish_reason": "stop"}` (finish_reason optional, an `id`
allowed as a label). Its key is the sha256 of the canonical JSON of the messages, so a student
that sends [system, user1, reply1, user2] meets the entry written for exactly that prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from factory.errors import ConfigError

ENTRY_KEYS = {"messages", "reply", "finish_reason", "id"}


@dataclass(frozen=True)
class TableEntry:
    """One reply of the table and where it was written (file:line or entry number)."""

    key: str
    reply: str
    finish_reason: str
    where: str


def table_key(messages: Iterable[dict[str, Any]]) -> str:
    """sha256 of the messages' canonical JSON: role and content only, keys sorted, no spaces."""
    # Only role and content: what the project's students send; other fields would not change a reply.
    canonical = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _entry_problem(data: Any) -> str | None:
    """What is wrong with one raw entry, or None."""
    if not isinstance(data, dict):
        return "an entry must be a JSON object"
    unknown = sorted(set(data) - ENTRY_KEYS)
    if unknown:
        return f"unknown keys {unknown}; an entry has {sorted(ENTRY_KEYS)}"
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{index}] must be an object with a string 'role'"
        if "content" not in message:
            return f"messages[{index}] has no 'content'"
    if not isinstance(data.get("reply"), str):
        return "'reply' must be a string"
    if not isinstance(data.get("finish_reason", "stop"), str):
        return "'finish_reason' must be a string"
    return None


def build_table(raw: list[tuple[str, Any]]) -> dict[str, TableEntry]:
    """Key every (where, entry) pair; raise ConfigError listing each bad or conflicting entry."""
    table: dict[str, TableEntry] = {}
    problems: list[str] = []
    for where, data in raw:
        problem = _entry_problem(data)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        entry = TableEntry(
            table_key(data["messages"]), data["reply"], data.get("finish_reason", "stop"), where
        )
        first = table.setdefault(entry.key, entry)
        if (first.reply, first.finish_reason) != (entry.reply, entry.finish_reason):
            problems.append(f"{where}: same messages as {first.where} but another reply; keep one of them")
    if problems:
        raise ConfigError("invalid student table:\n" + "\n".join(f"  - {p}" for p in problems))
    return table


def entries_table(entries: list[dict[str, Any]], source: str = "entries") -> dict[str, TableEntry]:
    """The table of in-memory entries (errors name `source[i]`)."""
    return build_table([(f"{source}[{i}]", data) for i, data in enumerate(entries)])


def load_table(path: Path) -> dict[str, TableEntry]:
    """Read a table file: a JSON list when it ends in .json, else JSONL; errors name file:line."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the student table {path}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not JSON ({exc}); a .json table is one list of entries") from exc
        if not isinstance(data, list):
            raise ConfigError(f"{path}: a .json table must be a list of entries (or use .jsonl)")
        return entries_table(data, str(path))
    raw: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw.append((f"{path}:{number}", orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc}); a table line is one entry") from exc
    return build_table(raw)
