"""The frozen eval suite: one split of a run's accepted records, written once, read by every eval.

A suite file is JSONL. Line 1 is the header `{"suite": {run, split, holdout, source_sha256, seed,
ratios, items, version}}`; every further line is one item (EvalItem.to_dict). Keys are sorted and
items ordered by id, so two builds from the same run give identical bytes and the same sha256,
which the eval report records to say which items a model was scored on.

The items are the records of the groups that `factory export` assigned to the split (its
manifest.json), so a held-out world or family is in the test suite and nowhere in training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from factory.checkfile import task_from_meta
from factory.errors import FactoryError, SuiteError
from factory.export import DATA_DIR, MANIFEST, SPLITS, write_atomic
from factory.models import Message, Task
from factory.state import parse_state
from factory.store import ACCEPTED

HEADER = "suite"
VERSION = 1
_DUMP = orjson.OPT_SORT_KEYS  # sorted keys: the bytes, hence the sha256, do not depend on dict order


@dataclass(frozen=True)
class EvalItem:
    """One dialogue to put to a student: the system message, the fixed user turns, and the record's meta."""

    id: str  # the record's task id
    family: str
    kind: str
    template: str  # the world
    system: str  # the system message, holding the STATE block
    user_turns: list[str]  # every user message of the record, in order
    meta: dict[str, Any]  # the record's meta (plan, canaries, forged, expect, ...)
    reference: list[str]  # the accepted record's assistant turns (for the report only)

    def to_dict(self) -> dict[str, Any]:
        """The item as one suite line's object."""
        return asdict(self)

    def messages(self, replies: list[str] | None = None) -> list[Message]:
        """The dialogue with `replies` (default: the reference) as the assistant turns, in order."""
        answers = self.reference if replies is None else replies
        dialogue: list[Message] = [{"role": "system", "content": self.system}]
        for i, user in enumerate(self.user_turns):
            dialogue.append({"role": "user", "content": user})
            if i < len(answers):
                dialogue.append({"role": "assistant", "content": answers[i]})
        return dialogue


@dataclass(frozen=True)
class Suite:
    """A suite file as read or written: its items, the sha256 of its bytes, its path and header."""

    items: list[EvalItem]
    sha256: str
    path: Path
    source: dict[str, Any]  # run, split, holdout, source_sha256, seed, ratios


_ITEM_TYPES = {f.name: f.type for f in fields(EvalItem)}


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's data/manifest.json, or a SuiteError saying to export the run first."""
    path = Path(run_dir) / DATA_DIR / MANIFEST
    if not Path(run_dir).is_dir():
        raise SuiteError(f"no run at {run_dir}: check the run name and --output-dir")
    if not path.is_file():
        raise SuiteError(
            f"{path} does not exist: run `factory export {Path(run_dir).name}` first; "
            "the suite takes the split assignment from its manifest"
        )
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SuiteError(f"{path} is not valid JSON ({exc}): run `factory export` again") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("groups"), list):
        raise SuiteError(f"{path} has no 'groups' list: run `factory export {Path(run_dir).name}` again")
    return manifest


def suite_source(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """The header of a suite built from run_dir: where its items come from (no paths, no clock)."""
    manifest = read_manifest(run_dir)
    return {
        "run": Path(run_dir).name,
        "split": split,
        "holdout": manifest.get("holdout"),
        "source_sha256": manifest.get("source_sha256"),
        "seed": manifest.get("seed"),
        "ratios": manifest.get("ratios"),
    }


def build_suite(run_dir: Path, split: str = "test") -> list[EvalItem]:
    """The records of `split`'s (world, family) groups in the run's export, as items sorted by id."""
    if split not in SPLITS:
        raise SuiteError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    assignment = {(g["world"], g["family"]): g["split"] for g in manifest["groups"]}
    path = run_dir / ACCEPTED
    if not path.is_file():
        raise SuiteError(f"{path} does not exist: run `factory generate --run {run_dir.name}` first")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.get("source_sha256"):
        raise SuiteError(
            f"{path} changed since the last export (its sha256 differs from manifest.json's): "
            f"run `factory export {run_dir.name}` again so the suite matches the training split"
        )
    items: dict[str, EvalItem] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        item = _item_from_record(_loads(line, where), where)
        group = (item.template, item.family)
        if group not in assignment:
            raise SuiteError(f"{where}: group {group} is not in manifest.json: run `factory export` again")
        if assignment[group] != split:
            continue
        if item.id in items:
            raise SuiteError(f"{where}: task id {item.id} appears twice in {path}")
        items[item.id] = item
    if not items:
        raise SuiteError(
            f"split {split!r} of {run_dir} holds no records: generate more tasks, or export with other "
            "--ratios or a --holdout"
        )
    return [items[key] for key in sorted(items)]


def _loads(line: bytes, where: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SuiteError(f"{where}: not valid JSON ({exc})") from exc


def _item_from_record(record: Any, where: str) -> EvalItem:
    """An accepted record as an item: system message, then alternating user and assistant turns."""
    meta = record.get("meta") if isinstance(record, dict) else None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(meta, dict) or not isinstance(messages, list) or len(messages) < 3:
        raise SuiteError(f"{where}: not an accepted record with 'messages' and 'meta'")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    expected = ["system"] + ["user", "assistant"] * ((len(messages) - 1) // 2)
    if roles != expected or not all(isinstance(m.get("content"), str) for m in messages):
        raise SuiteError(f"{where}: messages are not system, then user/assistant pairs of text: {roles}")
    head = {key: meta.get(key) for key in ("id", "family", "kind", "template")}
    missing = [key for key, value in head.items() if not isinstance(value, str) or not value]
    if missing:
        raise SuiteError(f"{where}: meta lacks {', '.join(missing)}")
    return EvalItem(
        **head,
        system=messages[0]["content"],
        user_turns=[m["content"] for m in messages[1::2]],
        meta=meta,
        reference=[m["content"] for m in messages[2::2]],
    )


def write_suite(items: list[EvalItem], path: Path, source: dict[str, Any]) -> Suite:
    """Write the items (header line first) to path, atomically; return the suite with its sha256."""
    if not items:
        raise SuiteError(f"no items to write to {path}")
    header = {**source, "items": len(items), "version": VERSION}
    data = b"".join(orjson.dumps(obj, option=_DUMP) + b"\n" for obj in _lines(header, items))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return Suite(items=list(items), sha256=hashlib.sha256(data).hexdigest(), path=path, source=header)


def _lines(header: dict[str, Any], items: list[EvalItem]) -> Iterator[dict[str, Any]]:
    yield {HEADER: header}
    for item in items:
        yield item.to_dict()


def load_suite(path: Path) -> Suite:
    """Read and check a suite file; SuiteError names file:line of the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file; make one with `factory suite RUN`")
    data = path.read_bytes()
    lines = [(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
    if not lines:
        raise SuiteError(f"{path} is empty; make it with `factory suite RUN`")
    number, first = lines[0]
    header = _loads(first, f"{path}:{number}")
    if not isinstance(header, dict) or not isinstance(header.get(HEADER), dict):
        raise SuiteError(f'{path}:{number}: the first line must be the header {{"suite": {{...}}}}')
    source = header[HEADER]
    if source.get("version") != VERSION:
        raise SuiteError(
            f"{path}:{number}: suite version {source.get('version')!r}; this factory reads {VERSION}"
        )
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, line in lines[1:]:
        where = f"{path}:{number}"
        item = _item_from_dict(_loads(line, where), where)
        if item.id in seen:
            raise SuiteError(f"{where}: item id {item.id} appears twice")
        seen.add(item.id)
        try:
            item_task(item)
        except FactoryError as exc:
            raise SuiteError(f"{where}: {exc}") from exc
        items.append(item)
    if source.get("items") != len(items):
        raise SuiteError(f"{path}: the header says {source.get('items')} items, the file holds {len(items)}")
    return Suite(items=items, sha256=hashlib.sha256(data).hexdigest(), path=path, source=source)


def _item_from_dict(obj: Any, where: str) -> EvalItem:
    """One item line, with every field present and of its type."""
    if not isinstance(obj, dict) or set(obj) != set(_ITEM_TYPES):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise SuiteError(f"{where}: an item needs exactly the keys {', '.join(_ITEM_TYPES)}; got {keys}")
    for name, kind in _ITEM_TYPES.items():
        value = obj[name]
        if kind == "str":
            ok = isinstance(value, str) and value != ""
        elif kind == "list[str]":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, dict)
        if not ok:
            raise SuiteError(f"{where}: item key {name!r} must be {kind}, got {value!r:.80}")
    if not obj["user_turns"]:
        raise SuiteError(f"{where}: item {obj['id']} has no user turns")
    return EvalItem(**obj)


def item_task(item: EvalItem) -> tuple[Task | None, dict[str, Any]]:
    """The item's planned Task (via checkfile.task_from_meta) and the state of its system message.

    The task is None for meta without the core fields (a foreign record); the rules then fall
    back to their plan-free checks. Meta that contradicts the state raises SuiteError.
    """
    state = parse_state(item.system)
    task, problems = task_from_meta(item.meta, item.messages(), state)
    if problems:
        details = "; ".join(p["detail"] for p in problems)
        raise SuiteError(f"item {item.id}: its meta does not match its STATE block: {details}")
    return task, state
