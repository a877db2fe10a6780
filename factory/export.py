"""Export a run's accepted records to an mlx_lm data folder: output/<run>/data/.

Files written (each line exactly {"messages": [...]}, so no meta reaches training):

    train.jsonl, valid.jsonl, test.jsonl   mlx_lm's chat format, one sample per assistant turn
    aios_finetune_data.jsonl               full dialogues of kind obedience + benign (the non-attack data:
                                           benign turns teach the model not to over-refuse)
    aios_finetune_adversarial.jsonl        full dialogues of kind adversarial
    aios_combined.jsonl                    every full dialogue
    manifest.json                          counts, the group assignment, ratios, seed, source hash, holdout

The split is by group = (world, family): every record of a group lands in one split, so a test
sample never shares its world and attack family with a training sample. A dialogue with k assistant
turns becomes k samples (its prefixes ending at each assistant turn) because `mlx_lm.lora
--mask-prompt` trains only the last message. An empty split gets no file: mlx_lm reads a missing
file as an empty split with a clear message, but crashes on an empty one.

A holdout (`families=a,b;worlds=w`) sends every group whose world or family it names to test; the
other groups split by the ratios as before, so train and valid never see a held-out world or family.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from factory.errors import ConfigError, FactoryError
from factory.holdout import HOLDOUT_KEYS, Holdout
from factory.store import ACCEPTED

DATA_DIR = "data"
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
KINDS = ("obedience", "benign", "adversarial")
# The seed's named files and the kinds each one holds.
NAMED_FILES: dict[str, tuple[str, ...]] = {
    "aios_finetune_data.jsonl": ("obedience", "benign"),
    "aios_finetune_adversarial.jsonl": ("adversarial",),
    "aios_combined.jsonl": KINDS,
}
# mlx_lm's default --batch-size; its trainer refuses a split with fewer rows than a batch.
MLX_DEFAULT_BATCH_SIZE = 4

Group = tuple[str, str]  # (world, family)


@dataclass
class SplitCounts:
    """What one split holds: groups, dialogues (records), training rows (samples), records by key."""

    groups: int = 0
    records: int = 0
    samples: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_family: dict[str, int] = field(default_factory=dict)
    by_world: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportSummary:
    """The result of an export: where it went, counts per split and per named file, warnings."""

    data_dir: Path
    records: int
    ratios: tuple[float, float, float]
    seed: int
    source_sha256: str
    splits: dict[str, SplitCounts]
    files: dict[str, int]  # named file -> dialogues in it
    assignment: dict[Group, str]  # (world, family) -> split
    warnings: list[str] = field(default_factory=list)
    holdout: Holdout | None = None
    held_groups: int = 0
    held_records: int = 0

    def manifest(self) -> dict[str, Any]:
        """The manifest.json contents; no paths or clock, so a re-export gives identical bytes."""
        return {
            "source": ACCEPTED,
            "source_sha256": self.source_sha256,
            "records": self.records,
            "ratios": list(self.ratios),
            "seed": self.seed,
            "group_key": ["world", "family"],
            "splits": {name: vars(counts) for name, counts in self.splits.items()},
            "files": self.files,
            "groups": [
                {"world": world, "family": family, "split": split}
                for (world, family), split in sorted(self.assignment.items())
            ],
            "warnings": self.warnings,
            "holdout": None
            if self.holdout is None
            else {
                "families": list(self.holdout.families),
                "worlds": list(self.holdout.worlds),
                "split": "test",
                "groups": self.held_groups,
                "records": self.held_records,
            },
        }


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse 'train,valid,test' proportions such as '0.8,0.1,0.1'."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"--ratios {text!r}: give three numbers train,valid,test, e.g. 0.8,0.1,0.1")
    return _check_ratios(values)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or ratios[0] <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ConfigError(
            f"split ratios {list(ratios)}: three of them (train, valid, test), each >= 0, "
            "train > 0, summing to 1"
        )
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


# The meta keys export needs; the rest (plan, usage, hashes…) is dropped on read to keep memory small.
EXPORT_META = ("id", "kind", "family", "template")


def _load_records(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Read and validate accepted.jsonl line by line; return slim records and the file's sha256."""
    if not run_dir.is_dir():
        raise FactoryError(f"no run at {run_dir}: check the run name and --output-dir")
    path = run_dir / ACCEPTED
    if not path.exists():
        raise FactoryError(f"{path} does not exist: run `factory generate` for this run first")
    digest = hashlib.sha256()
    records: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            digest.update(line)
            if line.strip():
                records.append(_slim_record(path, number, line))
    if not records:
        raise FactoryError(f"{path} has no records: nothing to export (was every task rejected?)")
    return records, digest.hexdigest()


def _slim_record(path: Path, number: int, line: bytes) -> dict[str, Any]:
    """Parse and check one accepted line, keeping only the messages and EXPORT_META."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FactoryError(
            f"{path} line {number} is not valid JSON ({exc}); a torn last line after a crash is repaired "
            "by resuming the run with `factory generate --run NAME`"
        ) from exc
    meta = record.get("meta") or {}
    messages = record.get("messages")
    missing = [key for key in EXPORT_META if not meta.get(key)]
    if missing:
        raise FactoryError(f"{path} line {number}: meta lacks {', '.join(missing)}")
    if not isinstance(messages, list) or not any(m.get("role") == "assistant" for m in messages):
        raise FactoryError(f"{path} line {number} (id {meta['id']}): no assistant message to train on")
    return {"messages": messages, "meta": {key: meta[key] for key in EXPORT_META}}


def _seeded_key(seed: int, *parts: str) -> str:
    # hashlib, not hash(): the order must be the same in every process.
    return hashlib.sha256("\0".join((str(seed), *parts)).encode()).hexdigest()


def assign_groups(sizes: dict[Group, int], ratios: tuple[float, float, float], seed: int) -> dict[Group, str]:
    """Assign each group to a split: seeded order, then the split furthest below its target by records.

    With three or more groups, every split whose ratio is > 0 gets at least one group.
    """
    total = sum(sizes.values())
    targets = dict(zip(SPLITS, (r * total for r in ratios), strict=True))
    filled = dict.fromkeys(SPLITS, 0)
    assignment: dict[Group, str] = {}
    order = sorted(sizes, key=lambda g: _seeded_key(seed, *g))
    for group in order:
        split = max(SPLITS, key=lambda s: targets[s] - filled[s])  # ties go to the earlier split
        assignment[group] = split
        filled[split] += sizes[group]
    # A small run can leave a split empty; move it the smallest group of the split with most groups.
    rank = {group: i for i, group in enumerate(order)}
    for split, ratio in zip(SPLITS, ratios, strict=True):
        if ratio <= 0 or split in assignment.values():
            continue
        members = Counter(assignment.values())
        donor = max(SPLITS, key=lambda s: members[s])
        if members[donor] < 2:
            continue
        smallest = min((g for g, s in assignment.items() if s == donor), key=lambda g: (sizes[g], rank[g]))
        assignment[smallest] = split
    return assignment


def expand_turns(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """One sample per assistant turn: the dialogue up to and including that turn."""
    return [messages[: i + 1] for i, message in enumerate(messages) if message.get("role") == "assistant"]


def _line(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"messages": messages}) + b"\n"


def write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write bytes (or an iterable of chunks, never joined in memory) through a temp file + os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp forces 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                fh.writelines(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _count(records: list[dict[str, Any]], groups: int) -> SplitCounts:
    counts = SplitCounts(groups=groups, records=len(records))
    for record in records:
        meta = record["meta"]
        counts.samples += len(expand_turns(record["messages"]))
        for key, table in (
            ("kind", counts.by_kind),
            ("family", counts.by_family),
            ("template", counts.by_world),
        ):
            table[meta[key]] = table.get(meta[key], 0) + 1
    for table in (counts.by_kind, counts.by_family, counts.by_world):
        ordered = sorted(table.items())
        table.clear()
        table.update(ordered)
    return counts


def _warnings(splits: dict[str, SplitCounts], min_rows: int) -> list[str]:
    notes = []
    for name in ("valid", "test"):
        samples = splits[name].samples
        if samples == 0:
            notes.append(f"{name} is empty (no {name}.jsonl written): generate more tasks for more groups")
        elif samples < min_rows:
            notes.append(
                f"{name} has {samples} samples; mlx_lm needs at least --batch-size "
                f"(default {MLX_DEFAULT_BATCH_SIZE}) rows in it"
            )
    return notes


def _assign(
    by_group: dict[Group, list[dict[str, Any]]],
    ratios: tuple[float, float, float],
    seed: int,
    holdout: Holdout | None,
    run_dir: Path,
) -> dict[Group, str]:
    """Held-out groups to test; the others by assign_groups, as without a holdout."""
    sizes = {g: len(rs) for g, rs in by_group.items() if not (holdout and holdout.holds(g))}
    if holdout and not sizes:
        raise ConfigError(
            f"--holdout {holdout.text()!r} holds every (world, family) group of {run_dir}: nothing is left "
            "to train on; hold out fewer families or worlds"
        )
    assignment = assign_groups(sizes, ratios, seed)
    assignment |= {g: "test" for g in by_group if g not in sizes}
    return assignment


def _holdout_warnings(holdout: Holdout | None, by_group: dict[Group, list[dict[str, Any]]]) -> list[str]:
    if holdout is None:
        return []
    seen = {"worlds": {w for w, _ in by_group}, "families": {f for _, f in by_group}}
    return [
        f"held-out {key[:-1] if key == 'worlds' else 'family'} {name} has no record in this run"
        for key in HOLDOUT_KEYS
        for name in getattr(holdout, key)
        if name not in seen[key]
    ]


def export_run(
    run_dir: Path,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    min_rows: int = MLX_DEFAULT_BATCH_SIZE,
    holdout: Holdout | None = None,
) -> ExportSummary:
    """Export run_dir/accepted.jsonl to run_dir/data/ (splits, named files, manifest); see the module doc."""
    shares = _check_ratios(ratios)
    run_dir = Path(run_dir)
    records, source_hash = _load_records(run_dir)
    # Order by a seeded hash of the task id: shuffled, and the same whatever order the pool finished in.
    records.sort(key=lambda r: _seeded_key(seed, r["meta"]["id"]))

    by_group: dict[Group, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_group[(record["meta"]["template"], record["meta"]["family"])].append(record)
    assignment = _assign(by_group, shares, seed, holdout, run_dir)

    split_records: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for record in records:
        meta = record["meta"]
        split_records[assignment[(meta["template"], meta["family"])]].append(record)

    data_dir = run_dir / DATA_DIR
    data_dir.mkdir(exist_ok=True)
    splits: dict[str, SplitCounts] = {}
    for name, members in split_records.items():
        groups = sum(1 for split in assignment.values() if split == name)
        splits[name] = _count(members, groups)
        path = data_dir / f"{name}.jsonl"
        if members:
            lines = (_line(sample) for r in members for sample in expand_turns(r["messages"]))
            write_atomic(path, lines)
        else:
            path.unlink(missing_ok=True)  # a stale file from an earlier export would be trained on

    files: dict[str, int] = {}
    for name, kinds in NAMED_FILES.items():
        chosen = [r for r in records if r["meta"]["kind"] in kinds]
        write_atomic(data_dir / name, (_line(r["messages"]) for r in chosen))
        files[name] = len(chosen)

    summary = ExportSummary(
        data_dir=data_dir,
        records=len(records),
        ratios=shares,
        seed=seed,
        source_sha256=source_hash,
        splits=splits,
        files=files,
        assignment=assignment,
        warnings=_warnings(splits, min_rows) + _holdout_warnings(holdout, by_group),
        holdout=holdout,
        held_groups=sum(1 for g in by_group if holdout and holdout.holds(g)),
        held_records=sum(len(rs) for g, rs in by_group.items() if holdout and holdout.holds(g)),
    )
    write_atomic(data_dir / MANIFEST, orjson.dumps(summary.manifest(), option=orjson.OPT_INDENT_2) + b"\n")
    return summary
