"""The frozen eval suite and the export holdout, on a real built-in run with a held-out family and world."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import read_jsonl, run_factory

from factory.errors import ConfigError, SuiteError
from factory.evaluate.suite import build_suite, item_task, load_suite, suite_source, write_suite
from factory.export import export_run
from factory.holdout import Holdout, parse_holdout, resolve_holdout
from factory.mix import families
from factory.plan import parse_mix, plan_tasks
from factory.seeds import load_worlds

FAMILY, WORLD = "persona_swap", "tutor"
HOLDOUT = f"families={FAMILY};worlds={WORLD}"


def _held(meta: dict[str, Any]) -> bool:
    return meta["family"] == FAMILY or meta["template"] == WORLD


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = run_factory(
        "generate", "--n", "200", "--run", "r", "--output-dir", str(out), "--holdout", HOLDOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "held out (families=persona_swap;worlds=tutor)" in " ".join(result.stdout.split())
    return out / "r"


@pytest.fixture
def run(source_run: Path, tmp_path: Path) -> Path:
    """A private copy of the exported run."""
    copy = tmp_path / "out" / "r"
    shutil.copytree(source_run, copy)
    return copy


def _group_of_sample(run: Path) -> dict[bytes, dict[str, Any]]:
    """Every training sample the run can give (prefix ending at an assistant turn) -> its record's meta."""
    found = {}
    for record in read_jsonl(run / "accepted.jsonl"):
        messages = record["messages"]
        for end, message in enumerate(messages, 1):
            if message["role"] == "assistant":
                found[orjson.dumps(messages[:end])] = record["meta"]
    return found


# --- holdout in export and generate ---------------------------------------------------------------


def test_generate_holdout_keeps_family_and_world_out_of_train_and_valid(run: Path) -> None:
    assert orjson.loads((run / "run.json").read_bytes())["holdout"] == HOLDOUT
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    accepted = read_jsonl(run / "accepted.jsonl")
    held = [r for r in accepted if _held(r["meta"])]
    assert {r["meta"]["family"] for r in held} >= {FAMILY} and {r["meta"]["template"] for r in held} >= {
        WORLD
    }
    assert manifest["holdout"] == {
        "families": [FAMILY],
        "worlds": [WORLD],
        "split": "test",
        "groups": len({(r["meta"]["template"], r["meta"]["family"]) for r in held}),
        "records": len(held),
    }
    for group in manifest["groups"]:
        if group["family"] == FAMILY or group["world"] == WORLD:
            assert group["split"] == "test", group
    # The rest still fill all three splits.
    rest = {g["split"] for g in manifest["groups"] if g["family"] != FAMILY and g["world"] != WORLD}
    assert rest == {"train", "valid", "test"}

    meta_of = _group_of_sample(run)
    for split in ("train", "valid"):
        rows = read_jsonl(run / "data" / f"{split}.jsonl")
        assert rows and not [m for row in rows if _held(m := meta_of[orjson.dumps(row["messages"])])], split
    test_rows = {orjson.dumps(row["messages"]) for row in read_jsonl(run / "data" / "test.jsonl")}
    assert all(orjson.dumps(r["messages"]) in test_rows for r in held)  # each full held-out dialogue


def test_export_reads_the_runs_holdout_and_none_clears_it(run: Path) -> None:
    out = str(run.parent)
    assert run_factory("export", "r", "--output-dir", out, "--holdout", "none").returncode == 0
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    assert manifest["holdout"] is None
    assert any(g["split"] == "train" for g in manifest["groups"] if g["world"] == WORLD)
    result = run_factory("export", "r", "--output-dir", out)  # the holdout stored in run.json
    assert result.returncode == 0, result.stderr
    assert orjson.loads((run / "data" / "manifest.json").read_bytes())["holdout"]["worlds"] == [WORLD]


def test_resume_keeps_the_holdout_and_old_runs_without_the_key_resume(run: Path) -> None:
    out = str(run.parent)
    again = run_factory("generate", "--n", "200", "--run", "r", "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert orjson.loads((run / "data" / "manifest.json").read_bytes())["holdout"]["families"] == [FAMILY]
    # A run.json written before the holdout setting existed still resumes (it is not a data setting).
    config = orjson.loads((run / "run.json").read_bytes())
    del config["holdout"]
    (run / "run.json").write_bytes(orjson.dumps(config))
    old = run_factory("generate", "--n", "200", "--run", "r", "--output-dir", out)
    assert old.returncode == 0, old.stderr
    assert orjson.loads((run / "data" / "manifest.json").read_bytes())["holdout"] is None


def test_holdout_errors_list_the_valid_names(run: Path, tmp_path: Path) -> None:
    worlds = [w.name for w in load_worlds(orjson.loads((run / "run.json").read_bytes())["seeds_dir"])]
    with pytest.raises(ConfigError) as info:
        parse_holdout("families=persona;worlds=mars", families(), worlds)
    message = str(info.value)
    assert "unknown families persona" in message and "unknown worlds mars" in message
    assert FAMILY in message and WORLD in message
    with pytest.raises(ConfigError, match="families=a,b or worlds=w"):
        parse_holdout("family=persona_swap", families(), worlds)
    with pytest.raises(ConfigError, match="holds every"):
        export_run(run, holdout=Holdout(families=tuple(families())))
    bad = run_factory("export", "r", "--output-dir", str(run.parent), "--holdout", "worlds=mars")
    assert bad.returncode == 2 and "valid worlds: bank_support" in bad.stderr
    # generate refuses before creating the run, not after generating it.
    gen = run_factory("generate", "--n", "5", "--run", "x", "--output-dir", str(tmp_path), "--holdout", "f=1")
    assert gen.returncode == 2 and "--holdout" in gen.stderr and not (tmp_path / "x").exists()


def test_parse_holdout_forms() -> None:
    known = (["a", "b", "c"], ["w"])
    assert parse_holdout("worlds=w", *known) == Holdout(worlds=("w",))
    assert parse_holdout(" families = c, a ; ", *known) == Holdout(families=("a", "c"))
    assert parse_holdout("families=c,a;worlds=w", *known).text() == "families=a,c;worlds=w"
    assert parse_holdout("none", *known) is None and resolve_holdout(None, "/nonexistent") is None
    with pytest.raises(ConfigError, match="names no family or world"):
        parse_holdout("families=", *known)


# --- the suite ------------------------------------------------------------------------------------


def test_suite_holds_the_test_split_records_sorted_by_id(run: Path) -> None:
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    split_of = {(g["world"], g["family"]): g["split"] for g in manifest["groups"]}
    records = {r["meta"]["id"]: r for r in read_jsonl(run / "accepted.jsonl")}
    for split in ("test", "valid"):
        items = build_suite(run, split)
        expected = sorted(
            i for i, r in records.items() if split_of[(r["meta"]["template"], r["meta"]["family"])] == split
        )
        assert [item.id for item in items] == expected
        for item in items:
            record = records[item.id]
            assert item.messages() == record["messages"] and item.meta == record["meta"]
            assert (item.family, item.kind, item.template) == tuple(
                record["meta"][k] for k in ("family", "kind", "template")
            )
    items = build_suite(run)
    assert {item.family for item in items} >= {FAMILY} and {item.template for item in items} >= {WORLD}
    multi = [item for item in items if item.family == "multi_turn_escalation"]
    assert multi and all(
        len(item.user_turns) >= 3 and len(item.reference) == len(item.user_turns) for item in multi
    )


def test_item_task_is_the_task_the_planner_made(run: Path) -> None:
    config = orjson.loads((run / "run.json").read_bytes())
    worlds = load_worlds(config["seeds_dir"])
    planned = {t.id: t for t in plan_tasks(worlds, config["n"], config["seed"], parse_mix(config["mix"]))}
    items = build_suite(run)
    assert len(items) >= 20
    for item in items:
        task, state = item_task(item)
        assert task == planned[item.id], item.id
        assert state == task.state


def test_write_is_deterministic_and_load_round_trips(run: Path, tmp_path: Path) -> None:
    source = suite_source(run)
    first = write_suite(build_suite(run), tmp_path / "a" / "s.jsonl", source)
    second = write_suite(build_suite(run), tmp_path / "b.jsonl", suite_source(run))
    data = first.path.read_bytes()
    assert data == second.path.read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    header = orjson.loads(data.splitlines()[0])["suite"]
    assert header["run"] == "r" and header["split"] == "test" and header["items"] == len(first.items)
    assert header["holdout"]["worlds"] == [WORLD] and str(tmp_path) not in data.decode()
    loaded = load_suite(first.path)
    assert loaded.items == first.items and loaded.sha256 == first.sha256 and loaded.source == header


def _corrupt(path: Path, line: int, change: Any) -> None:
    lines = path.read_bytes().splitlines()
    lines[line - 1] = change(lines[line - 1])
    path.write_bytes(b"\n".join(lines) + b"\n")


def _edit_item(key: str, value: Any) -> Any:
    return lambda raw: orjson.dumps({**orjson.loads(raw), key: value})


def test_load_errors_name_file_and_line(run: Path, tmp_path: Path) -> None:
    good = write_suite(build_suite(run), tmp_path / "s.jsonl", suite_source(run)).path.read_bytes()
    path = tmp_path / "bad.jsonl"
    cases = [
        (3, lambda raw: raw[:-5], ":3: not valid JSON"),
        (2, _edit_item("user_turns", "hi"), ":2: item key 'user_turns' must be list[str]"),
        (4, _edit_item("extra", 1), ":4: an item needs exactly the keys"),
        (1, lambda raw: b'{"items": 3}', ":1: the first line must be the header"),
    ]
    for line, change, message in cases:
        path.write_bytes(good)
        _corrupt(path, line, change)
        with pytest.raises(SuiteError, match=f"{path}{message}".replace("[", r"\[").replace("]", r"\]")):
            load_suite(path)
    # Meta that contradicts its STATE: an answer about a field the state does not have.
    path.write_bytes(good)
    lines = good.splitlines()
    number = next(n for n, raw in enumerate(lines[1:], 2) if orjson.loads(raw)["meta"]["expect"] == "answer")
    item = orjson.loads(lines[number - 1])
    item["meta"]["plan"]["target"]["field"] = "no_such_field"
    _corrupt(path, number, lambda _raw: orjson.dumps(item))
    with pytest.raises(SuiteError, match=f"{path}:{number}: item .* does not match its STATE"):
        load_suite(path)
    path.write_bytes(b"\n".join(good.splitlines()[:-1]) + b"\n")
    with pytest.raises(SuiteError, match="header says"):
        load_suite(path)


def test_build_errors_say_to_export(run: Path) -> None:
    (run / "data" / "manifest.json").unlink()
    with pytest.raises(SuiteError, match="run `factory export r` first"):
        build_suite(run)
    export_run(run)
    with (run / "accepted.jsonl").open("ab") as fh:
        fh.write(b"\n")
    with pytest.raises(SuiteError, match="changed since the last export"):
        build_suite(run)
    with pytest.raises(SuiteError, match="choose one of train, valid, test"):
        build_suite(run, "dev")


def test_cli_writes_the_suite_and_prints_counts_and_sha(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "suite.jsonl"
    result = run_factory("suite", "r", "--output-dir", str(run.parent), "--out", str(out))
    assert result.returncode == 0, result.stderr
    suite = load_suite(out)
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in result.stdout
    row = next(line for line in result.stdout.splitlines() if f" {FAMILY} " in line)
    assert row.replace("│", " ").split()[-1] == str(sum(item.family == FAMILY for item in suite.items))
    total = next(line for line in result.stdout.splitlines() if " total " in line)
    assert total.replace("│", " ").split()[-1] == str(len(suite.items))
    missing = run_factory("suite", "nope", "--output-dir", str(run.parent), "--out", str(out))
    assert missing.returncode == 2 and "no run at" in missing.stderr
