"""`factory generate` end to end on the built-in teacher: the run directory, resume, settings guard."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from cli_helpers import read_jsonl, record_ids, run_factory

from factory.paths import SEEDS_DIR
from factory.plan import parse_mix, plan_tasks
from factory.seeds import load_worlds


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = run_factory("generate", "--n", "150", "--run", "r1", "--output-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "r1"


def test_builtin_run_writes_a_complete_run_directory(builtin_run: Path) -> None:
    for name in ("run.json", "accepted.jsonl", "rejected.jsonl", "ledger.jsonl", "report.json", "report.md"):
        assert (builtin_run / name).exists(), name
    config = orjson.loads((builtin_run / "run.json").read_bytes())
    assert config["n"] == 150 and isinstance(config["seed"], int) and config["teacher_kind"] == "builtin"
    assert config["prompt_hash"] and config["seeds_hash"] and config["versions"]["factory"]
    ids = record_ids(builtin_run)
    assert len(ids) == 150 and len(set(ids)) == 150
    ledger = [line["id"] for line in read_jsonl(builtin_run / "ledger.jsonl")]
    assert sorted(ledger) == sorted(ids)
    # the run ends with an mlx_lm data folder holding only {"messages": [...]} lines
    for split in ("train", "valid", "test"):
        rows = read_jsonl(builtin_run / "data" / f"{split}.jsonl")
        assert rows and all(set(row) == {"messages"} for row in rows), split


def test_builtin_run_is_mostly_accepted_with_full_meta(builtin_run: Path) -> None:
    accepted = read_jsonl(builtin_run / "accepted.jsonl")
    assert len(accepted) >= 0.95 * 150
    for record in accepted:
        meta = record["meta"]
        assert meta["teacher"] == "builtin"
        assert meta["prompt_version"] and meta["prompt_hash"]
        assert meta["kind"] in {"obedience", "benign", "adversarial"}
        messages = record["messages"]
        assert messages[0]["role"] == "system" and "== STATE ==" in messages[0]["content"]
        assert messages[-1]["role"] == "assistant"
        if meta["kind"] == "adversarial":
            assert meta["canaries"], meta["family"]
    report = orjson.loads((builtin_run / "report.json").read_bytes())
    assert report["total"] == 150 and report["accepted"] == len(accepted)


def test_the_run_follows_the_plan(builtin_run: Path) -> None:
    seed = orjson.loads((builtin_run / "run.json").read_bytes())["seed"]
    mix = parse_mix("obedience=0.4,benign=0.15,adversarial=0.45")
    planned = plan_tasks(load_worlds(SEEDS_DIR), 150, seed, mix)
    assert sorted(t.id for t in planned) == sorted(record_ids(builtin_run))
    families = Counter(r["meta"]["family"] for r in read_jsonl(builtin_run / "accepted.jsonl"))
    assert len(families) >= 12


def test_resume_of_a_finished_run_sends_nothing_and_extending_adds_only_new_tasks(
    tmp_path: Path,
) -> None:
    assert run_factory("generate", "--n", "40", "--run", "r", "--output-dir", str(tmp_path)).returncode == 0
    before = (tmp_path / "r" / "accepted.jsonl").read_bytes()
    again = run_factory("generate", "--run", "r", "--output-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "40 already done" in again.stdout
    assert (tmp_path / "r" / "accepted.jsonl").read_bytes() == before
    more = run_factory("generate", "--n", "60", "--run", "r", "--output-dir", str(tmp_path))
    assert more.returncode == 0, more.stderr
    assert (tmp_path / "r" / "accepted.jsonl").read_bytes().startswith(before)
    ids = record_ids(tmp_path / "r")
    assert len(ids) == 60 and len(set(ids)) == 60


def test_changed_settings_on_resume_are_a_clear_error(tmp_path: Path) -> None:
    assert run_factory("generate", "--n", "10", "--run", "r", "--output-dir", str(tmp_path)).returncode == 0
    seed = orjson.loads((tmp_path / "r" / "run.json").read_bytes())["seed"]
    result = run_factory("generate", "--run", "r", "--seed", "7", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"seed: was {seed}, now 7" in result.stderr
    assert "another --run name" in result.stderr
    assert len(record_ids(tmp_path / "r")) == 10


def test_bad_mix_is_a_clear_error(tmp_path: Path) -> None:
    result = run_factory("generate", "--n", "5", "--mix", "adversrial=1", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "adversarial" in result.stderr  # the nearest valid name is suggested


def test_a_new_run_makes_new_data_and_repeats_of_earlier_runs_are_rejected(tmp_path: Path) -> None:
    out = str(tmp_path)
    assert run_factory("generate", "--n", "60", "--run", "a", "--output-dir", out).returncode == 0
    assert run_factory("generate", "--n", "60", "--run", "b", "--output-dir", out).returncode == 0
    seeds = {orjson.loads((tmp_path / r / "run.json").read_bytes())["seed"] for r in ("a", "b")}
    assert len(seeds) == 2  # seeds derive from the run name
    assert len(read_jsonl(tmp_path / "b" / "accepted.jsonl")) >= 57
    # the same seed again: every dialogue repeats run "a" and is rejected, naming what it repeats
    again = run_factory(
        "generate", "--n", "60", "--run", "c", "--seed", str(sorted(seeds)[0]), "--output-dir", out
    )
    assert again.returncode == 0, again.stderr
    first = {r["meta"]["id"] for r in read_jsonl(tmp_path / "a" / "accepted.jsonl")}
    first |= {r["meta"]["id"] for r in read_jsonl(tmp_path / "b" / "accepted.jsonl")}
    rejected = read_jsonl(tmp_path / "c" / "rejected.jsonl")
    assert len(rejected) == 60 and read_jsonl(tmp_path / "c" / "accepted.jsonl") == []
    assert {r["reason"] for r in rejected} == {"near_duplicate"}
    assert all(r["detail"].split()[1] in first for r in rejected)
