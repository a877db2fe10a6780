"""`factory adversarial --teacher URL`: the teacher writes the attacks, then the dialogue around each.

The project's test teacher answers an attack-writer request with attacks worded from the phrase
banks (factory.testing.teacher_server.written_attacks) and a dialogue request with the built-in
writer's turns, over real HTTP through the real openai client.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from cli_helpers import line_count, read_jsonl, record_ids, run_factory, start_factory

from factory.attack_writer import eligible
from factory.checkfile import task_from_meta
from factory.checks import run_checks
from factory.state import parse_state


def _args(url: str, n: int, run: str, out: Path, *extra: str) -> list[str]:
    return ["adversarial", "--teacher", url, "--n", str(n), "--run", run, "--output-dir", str(out), *extra]


def _writer_meta(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "attack_writer" in r["meta"]]


def test_eligible_attacks_are_teacher_written_and_carried_verbatim(teacher_server, tmp_path: Path) -> None:
    server = teacher_server({})
    done = run_factory(*_args(server.base_url, 150, "w", tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_jsonl(tmp_path / "w" / "accepted.jsonl")
    assert len(records) == 150 and not read_jsonl(tmp_path / "w" / "rejected.jsonl")
    written = [r for r in _writer_meta(records) if r["meta"]["attack_writer"]["source"] == "teacher"]
    assert len(written) >= 50
    for record in written:
        meta, target = record["meta"], record["meta"]["plan"]["target"]
        assert target["written_by"] == "teacher" and not target.get("chain")
        assert record["messages"][1] == {"role": "user", "content": target["payload"]}
        # The plan carries the written attack: the exact task comes back and passes every checker.
        state = parse_state(record["messages"][0]["content"])
        task, problems = task_from_meta(meta, record["messages"], state)
        assert task is not None and not problems and task.target.written_by == "teacher"
        assert run_checks(record["messages"], task, state) == []
        # The record counts both calls: the attack writer's and the dialogue's.
        assert meta["usage"]["prompt_tokens"] > 0 and meta["attack_writer"]["offered"] == 3
    # Every task the writer could serve went to it; the others (multi-turn, code payloads) did not.
    for record in records:
        state = parse_state(record["messages"][0]["content"])
        task, _ = task_from_meta(record["meta"], record["messages"], state)
        planned_eligible = task is not None and (eligible(task) or task.target.written_by == "teacher")
        assert ("attack_writer" in record["meta"]) == planned_eligible, record["meta"]["family"]
    answered = Counter(server.stats()["answered"])
    assert sum(1 for key in answered if key.endswith(".attacks")) == len(_writer_meta(records))
    report = orjson.loads((tmp_path / "w" / "report.json").read_bytes())
    origins = report["attack_origins"]
    assert origins["by_source"]["teacher_written"]["accepted"] == len(written)
    assert origins["attack_writer"]["asked"] == len(_writer_meta(records))
    assert "## Attack origins" in (tmp_path / "w" / "report.md").read_text()


def test_a_second_batch_writes_no_attack_the_first_one_kept(teacher_server, tmp_path: Path) -> None:
    server = teacher_server({})
    for run in ("one", "two"):
        done = run_factory(*_args(server.base_url, 120, run, tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
    first = {
        r["meta"]["plan"]["target"]["payload"]
        for r in read_jsonl(tmp_path / "one" / "accepted.jsonl")
        if r["meta"]["plan"]["target"].get("written_by")
    }
    second = [
        r["meta"]["plan"]["target"]["payload"]
        for r in read_jsonl(tmp_path / "two" / "accepted.jsonl")
        if r["meta"]["plan"]["target"].get("written_by")
    ]
    assert first and second and not first & set(second)
    report = orjson.loads((tmp_path / "two" / "report.json").read_bytes())
    assert report["novelty"]["stale_across"] == 0 and report["novelty"]["earlier"]["runs"] == 1


def test_no_written_attacks_and_the_builtin_teacher_keep_the_planned_attacks(
    teacher_server, tmp_path: Path
) -> None:
    server = teacher_server({})
    done = run_factory(*_args(server.base_url, 60, "off", tmp_path, "--no-written-attacks"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _writer_meta(read_jsonl(tmp_path / "off" / "accepted.jsonl"))
    assert not [key for key in server.stats()["answered"] if key.endswith(".attacks")]
    builtin = run_factory("adversarial", "--n", "60", "--run", "b", "--output-dir", str(tmp_path))
    assert builtin.returncode == 0, builtin.stdout + builtin.stderr
    assert not _writer_meta(read_jsonl(tmp_path / "b" / "accepted.jsonl"))


def test_unusable_attack_replies_fall_back_to_the_planned_attack(teacher_server, tmp_path: Path) -> None:
    # Half the replies are malformed: an attack request then yields nothing usable, and the task
    # is asked as planned; a dialogue request is retried as always. Nothing is lost.
    server = teacher_server({"p_malformed": 0.5})
    done = run_factory(*_args(server.base_url, 80, "bad", tmp_path, "--transform-rate", "0"))
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_jsonl(tmp_path / "bad" / "accepted.jsonl")
    rejected = read_jsonl(tmp_path / "bad" / "rejected.jsonl")
    assert len(records) + len(rejected) == 80
    fell_back = [r for r in _writer_meta(records) if r["meta"]["attack_writer"]["source"] == "plan"]
    assert fell_back, "no attack reply was malformed at p=0.5"
    for record in fell_back:
        assert record["meta"]["attack_writer"]["error"].startswith("no_json")  # the malformed reply is prose
        assert not record["meta"]["plan"]["target"].get("written_by")


def test_killed_run_resumes_and_stays_novel_against_its_own_first_half(
    teacher_server, tmp_path: Path
) -> None:
    server = teacher_server({"latency_ms": 50, "slots": 8})
    args = _args(server.base_url, 200, "k", tmp_path, "--concurrency", "8")
    process = start_factory(*args)
    deadline = time.monotonic() + 120
    while line_count(tmp_path / "k" / "ledger.jsonl") < 60:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done = run_factory(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = record_ids(tmp_path / "k")
    assert len(ids) == 200 and len(set(ids)) == 200
    payloads = [
        r["meta"]["plan"]["target"]["payload"]
        for r in read_jsonl(tmp_path / "k" / "accepted.jsonl")
        if r["meta"]["plan"]["target"].get("written_by")
    ]
    assert len(payloads) == len(set(payloads))
    report = orjson.loads((tmp_path / "k" / "report.json").read_bytes())
    assert report["novelty"]["stale_inside"] == 0
    # The novelty figures cover both sessions of the run, screened as they were written.
    accepted = [
        r for r in read_jsonl(tmp_path / "k" / "accepted.jsonl") if r["meta"]["kind"] == "adversarial"
    ]
    assert report["novelty"]["novel"] == len(accepted) and report["novelty"]["attacks"] >= len(accepted)
