"""`factory export`: the mlx_lm data folder made from a real built-in run."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import read_jsonl, run_factory

from factory.errors import FactoryError
from factory.export import export_run

SPLITS = ("train", "valid", "test")
NAMED = ("aios_finetune_data.jsonl", "aios_finetune_adversarial.jsonl", "aios_combined.jsonl")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = run_factory("generate", "--n", "240", "--run", "r", "--output-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "r"


@pytest.fixture
def run(source_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run, so each test exports into its own data/."""
    copy = tmp_path / "out" / "r"
    copy.mkdir(parents=True)
    for name in ("run.json", "accepted.jsonl"):
        shutil.copy(source_run / name, copy / name)
    return copy


def _key(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(messages)


def _sample_groups(run: Path) -> dict[bytes, tuple[str, str]]:
    """Every possible training sample of the run (each prefix ending at an assistant turn) -> its group."""
    groups = {}
    for record in read_jsonl(run / "accepted.jsonl"):
        messages = record["messages"]
        for end, message in enumerate(messages, 1):
            if message["role"] == "assistant":
                groups[_key(messages[:end])] = (record["meta"]["template"], record["meta"]["family"])
    return groups


def _mlx_style_read(path: Path) -> list[dict[str, Any]]:
    # The way mlx_lm's load_local_dataset reads a split: stdlib json, one object per line.
    with path.open(encoding="utf-8") as fid:
        return [json.loads(line) for line in fid]


def test_split_files_hold_only_messages_ending_in_an_assistant_turn(run: Path) -> None:
    export_run(run)
    for split in SPLITS:
        rows = _mlx_style_read(run / "data" / f"{split}.jsonl")
        assert rows, split
        for row in rows:
            assert set(row) == {"messages"}
            assert row["messages"][0]["role"] == "system"
            assert row["messages"][-1]["role"] == "assistant"
    for name in NAMED:
        assert all(set(row) == {"messages"} for row in _mlx_style_read(run / "data" / name))
    assert not list((run / "data").glob(".*")), "a temp file was left behind"


def test_no_world_family_group_is_in_two_splits(run: Path) -> None:
    summary = export_run(run)
    groups = _sample_groups(run)
    seen: dict[tuple[str, str], set[str]] = {}
    for split in SPLITS:
        for row in read_jsonl(run / "data" / f"{split}.jsonl"):
            seen.setdefault(groups[_key(row["messages"])], set()).add(split)
    assert all(len(splits) == 1 for splits in seen.values()), {g: s for g, s in seen.items() if len(s) > 1}
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    listed = {(g["world"], g["family"]): g["split"] for g in manifest["groups"]}
    assert listed == {group: splits.pop() for group, splits in seen.items()}
    assert len(listed) == sum(c.groups for c in summary.splits.values())


def test_a_dialogue_gives_one_sample_per_assistant_turn_all_in_one_split(run: Path) -> None:
    export_run(run)
    accepted = read_jsonl(run / "accepted.jsonl")
    three_turn = [r for r in accepted if sum(m["role"] == "user" for m in r["messages"]) == 3]
    assert three_turn, "the built-in run should hold 3-user-turn dialogues"
    rows = {split: read_jsonl(run / "data" / f"{split}.jsonl") for split in SPLITS}
    for record in three_turn:
        full = record["messages"]
        found = [
            (split, row["messages"])
            for split, split_rows in rows.items()
            for row in split_rows
            if row["messages"] == full[: len(row["messages"])]
        ]
        assert len(found) == 3
        assert len({split for split, _ in found}) == 1
        samples = sorted((messages for _, messages in found), key=len)
        assert [len(s) for s in samples] == [3, 5, 7] and samples[-1] == full
        for shorter, longer in pairwise(samples):
            assert longer[: len(shorter)] == shorter
    total_turns = sum(m["role"] == "assistant" for r in accepted for m in r["messages"])
    assert sum(len(r) for r in rows.values()) == total_turns


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2)])
def test_ratios_are_roughly_honoured_by_records(run: Path, ratios: tuple[float, float, float]) -> None:
    summary = export_run(run, ratios=ratios)
    total = summary.records
    assert total == len(read_jsonl(run / "accepted.jsonl"))
    for split, ratio in zip(SPLITS, ratios, strict=True):
        share = summary.splits[split].records / total
        assert abs(share - ratio) < 0.05, (split, share, ratio)
        assert summary.splits[split].samples == len(read_jsonl(run / "data" / f"{split}.jsonl"))
    # mlx_lm refuses a validation set smaller than one batch (default 4).
    assert summary.splits["valid"].samples >= 4 and summary.splits["test"].samples >= 4
    assert not summary.warnings


def test_same_seed_gives_identical_bytes_and_another_seed_another_split(run: Path, tmp_path: Path) -> None:
    export_run(run, seed=7)
    first = {p.name: p.read_bytes() for p in (run / "data").iterdir()}
    other = tmp_path / "other"
    shutil.copytree(run, other)
    # Reversed source order: the export must not depend on the order the pool finished in.
    lines = (other / "accepted.jsonl").read_bytes().splitlines(keepends=True)
    (other / "accepted.jsonl").write_bytes(b"".join(reversed(lines)))
    export_run(other, seed=7)
    second = {p.name: p.read_bytes() for p in (other / "data").iterdir()}
    assert first.keys() == second.keys() and len(first) == 7
    for name in first:
        if name != "manifest.json":  # it holds the (now different) source hash
            assert first[name] == second[name], name
    export_run(run, seed=7)
    assert {p.name: p.read_bytes() for p in (run / "data").iterdir()} == first
    export_run(run, seed=8)
    assert (run / "data" / "test.jsonl").read_bytes() != first["test.jsonl"]


def test_named_files_partition_the_full_dialogues_by_kind(run: Path) -> None:
    summary = export_run(run)
    kind_of = {_key(r["messages"]): r["meta"]["kind"] for r in read_jsonl(run / "accepted.jsonl")}
    data = run / "data"
    kinds = {name: Counter(kind_of[_key(r["messages"])] for r in read_jsonl(data / name)) for name in NAMED}
    assert set(kinds["aios_finetune_data.jsonl"]) == {"obedience", "benign"}
    assert set(kinds["aios_finetune_adversarial.jsonl"]) == {"adversarial"}
    assert (
        kinds["aios_combined.jsonl"]
        == kinds["aios_finetune_data.jsonl"] + kinds["aios_finetune_adversarial.jsonl"]
    )
    assert kinds["aios_combined.jsonl"] == Counter(kind_of.values())
    assert summary.files == {name: sum(kinds[name].values()) for name in NAMED}


def _subset(run: Path, groups: dict[tuple[str, str], int]) -> None:
    """Keep only the first `n` records of each listed (world, family) group in the run."""
    kept: list[bytes] = []
    left = dict(groups)
    for line in (run / "accepted.jsonl").read_bytes().splitlines(keepends=True):
        meta = orjson.loads(line)["meta"]
        group = (meta["template"], meta["family"])
        if left.get(group, 0) > 0:
            left[group] -= 1
            kept.append(line)
    assert not any(left.values()), left
    (run / "accepted.jsonl").write_bytes(b"".join(kept))


def test_three_groups_fill_every_split_and_two_leave_no_stale_file(run: Path) -> None:
    sizes = Counter((r["meta"]["template"], r["meta"]["family"]) for r in read_jsonl(run / "accepted.jsonl"))
    ranked = [group for group, _ in sizes.most_common()]
    big, small_a, small_b = ranked[0], ranked[-2], ranked[-1]
    _subset(run, {big: sizes[big], small_a: 1, small_b: 1})
    summary = export_run(run)
    assert all(summary.splits[s].records > 0 for s in SPLITS)
    too_small = [s for s in ("valid", "test") if summary.splits[s].samples < 4]
    assert len(summary.warnings) == len(too_small)
    assert all("mlx_lm needs at least" in w for w in summary.warnings)

    _subset(run, {big: sizes[big], small_a: 1})
    summary = export_run(run)
    empty = [s for s in SPLITS if summary.splits[s].records == 0]
    assert empty and all(not (run / "data" / f"{s}.jsonl").exists() for s in empty)
    assert any("is empty" in w for w in summary.warnings)


def test_cli_prints_the_counts_and_writes_the_manifest(run: Path) -> None:
    result = run_factory("export", "r", "--output-dir", str(run.parent), "--ratios", "0.7,0.15,0.15")
    assert result.returncode == 0, result.stderr
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    assert manifest["ratios"] == [0.7, 0.15, 0.15]
    assert manifest["seed"] == orjson.loads((run / "run.json").read_bytes())["seed"]  # the run's seed
    assert manifest["source_sha256"] and manifest["records"] == len(read_jsonl(run / "accepted.jsonl"))
    for split in SPLITS:
        counts = manifest["splits"][split]
        row = next(line for line in result.stdout.splitlines() if f" {split} " in line)
        numbers = [int(cell) for cell in row.replace("│", " ").split()[1:]]
        assert numbers[:3] == [counts["groups"], counts["records"], counts["samples"]]
    assert "aios_combined.jsonl" in result.stdout


def test_cli_errors_name_the_path(run: Path) -> None:
    missing = run_factory("export", "nope", "--output-dir", str(run.parent))
    assert missing.returncode == 2 and str(run.parent / "nope") in missing.stderr
    bad = run_factory("export", "r", "--output-dir", str(run.parent), "--ratios", "0.8,0.3")
    assert bad.returncode == 2 and "--ratios" in bad.stderr
    (run / "accepted.jsonl").write_bytes(b"")
    empty = run_factory("export", "r", "--output-dir", str(run.parent))
    assert empty.returncode == 2 and str(run / "accepted.jsonl") in empty.stderr
    with pytest.raises(FactoryError, match="no records"):
        export_run(run)
    assert not (run / "data" / "train.jsonl").exists()
