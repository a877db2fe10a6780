"""`factory generate` and `factory doctor` against the project's test teacher over real HTTP.

Covers what an overnight user relies on: a SIGKILL'd run resumes with every task exactly once, SIGINT
stops cleanly, an unreachable teacher is named, and bad replies are rejected with reasons, losing nothing.
"""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from pathlib import Path

from cli_helpers import line_count, read_jsonl, record_ids, run_factory, start_factory


def _generate_args(url: str, n: int, run: str, out: Path, concurrency: int) -> list[str]:
    """The `factory generate` arguments for a run against the test teacher at `url`."""
    return [
        "generate",
        "--teacher",
        url,
        "--n",
        str(n),
        "--run",
        run,
        "--output-dir",
        str(out),
        "--concurrency",
        str(concurrency),
    ]


def _wait_for_lines(path: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while line_count(path) < count:
        assert time.monotonic() < deadline, f"{path} never reached {count} lines"
        time.sleep(0.05)


def test_sigkill_at_40_percent_then_resume_gives_every_task_exactly_once(teacher_server, tmp_path):
    server = teacher_server({"latency_ms": 100, "slots": 16})
    args = _generate_args(server.base_url, 300, "k", tmp_path, concurrency=16)
    process = start_factory(*args)
    _wait_for_lines(tmp_path / "k" / "ledger.jsonl", 120)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done_before = len(set(record_ids(tmp_path / "k")))
    assert 100 <= done_before < 300

    result = run_factory(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = record_ids(tmp_path / "k")
    assert len(ids) == 300 and len(set(ids)) == 300  # exactly once each
    answered = Counter(server.stats()["answered"])
    resent = sum(count - 1 for count in answered.values() if count > 1)
    assert resent <= 16, f"{resent} already-answered tasks were asked again (cap 16)"


def test_sigint_finishes_in_flight_work_and_says_how_to_resume(teacher_server, tmp_path):
    server = teacher_server({"latency_ms": 200, "slots": 8})
    args = _generate_args(server.base_url, 200, "s", tmp_path, concurrency=8)
    process = start_factory(*args)
    _wait_for_lines(tmp_path / "s" / "ledger.jsonl", 20)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "resume with: factory generate --run s" in output
    stopped_at = len(record_ids(tmp_path / "s"))
    assert 20 <= stopped_at < 200
    # in-flight requests were allowed to finish: every answered task was written
    assert set(server.stats()["answered"]) <= set(record_ids(tmp_path / "s"))
    result = run_factory(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(set(record_ids(tmp_path / "s"))) == 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_teacher_names_the_url_and_what_to_check(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = run_factory("generate", "--teacher", url, "--n", "5", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert url in result.stderr
    assert "running" in result.stderr
    doctor = run_factory("doctor", "--teacher", url)
    assert doctor.returncode == 1
    assert url in doctor.stdout


def test_malformed_and_truncated_replies_are_never_accepted(teacher_server, tmp_path):
    server = teacher_server({"p_malformed": 0.5, "p_truncated": 0.5})
    result = run_factory(
        "generate", "--teacher", server.base_url, "--n", "30", "--run", "m", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_jsonl(tmp_path / "m" / "accepted.jsonl") == []
    rejected = read_jsonl(tmp_path / "m" / "rejected.jsonl")
    assert len(rejected) == 30
    assert {r["reason"] for r in rejected} <= {"truncated", "no_json", "invalid_json", "bad_shape"}
    assert all(r["meta"]["attempts"] == 3 for r in rejected)  # asked again a bounded number of times


def test_two_percent_bad_replies_lose_no_task(teacher_server, tmp_path):
    server = teacher_server({"p_malformed": 0.01, "p_truncated": 0.01, "p_500": 0.02})
    result = run_factory(
        "generate", "--teacher", server.base_url, "--n", "200", "--run", "b", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ids = record_ids(tmp_path / "b")
    assert len(ids) == 200 and len(set(ids)) == 200
    assert len(read_jsonl(tmp_path / "b" / "accepted.jsonl")) >= 190


def test_doctor_reports_a_working_teacher(teacher_server):
    server = teacher_server({})
    result = run_factory("doctor", "--teacher", server.base_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answers /v1/models" in result.stdout
    assert "parses" in result.stdout
