"""The tiny random model served by a stock `mlx_lm.server`, used as a real teacher over HTTP.

Its replies are gibberish, so every task must end rejected with a parse or check reason (never
`teacher_error`, which would mean the factory could not talk to mlx_lm.server), and the run must
still finish cleanly: ledger complete, report written.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from cli_helpers import read_jsonl, run_factory

OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")
START_TIMEOUT = 120.0  # seconds: imports and the model load are slow on a loaded two-core machine
TASKS = 8
MAX_TOKENS = "64"  # gibberish fails as well in 64 tokens as in 1200, and much sooner
# What a readable-but-useless reply can be rejected for: parse_turns' reasons, or failed checks.
PARSE_REASONS = {
    "truncated",
    "no_json",
    "invalid_json",
    "bad_shape",
    "missing_payload",
    "empty_turn",
    "wrong_turn_count",
    "role_order",
}
REJECT_REASONS = PARSE_REASONS | {"checks"}


class MlxServer(NamedTuple):
    """A running mlx_lm.server: its OpenAI base URL, the model id it lists, and its log file."""

    base_url: str
    model_id: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listed_models(url: str) -> list[str] | None:
    """Model ids from GET /v1/models, or None while the server is not answering yet."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
            return [m["id"] for m in json.loads(response.read())["data"]]
    except (OSError, http.client.HTTPException, ValueError, KeyError):  # refused, cut or empty: starting
        return None


@pytest.fixture(scope="module")
def mlx_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlxServer]:
    """Start `mlx_lm server` on the tiny model at 127.0.0.1:<free port>; kill it after the module."""
    folder = tmp_path_factory.mktemp("mlx_server")
    hub_cache = folder / "hub"  # must exist: /v1/models scans it and answers an empty body otherwise
    hub_cache.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    if OPENBLAS.exists():  # mlx's bundled CPU BLAS is 10-25x slower
        env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(OPENBLAS), env.get("LD_PRELOAD")]))
    port = _free_port()
    command = [sys.executable, "-m", "mlx_lm", "server", "--model", str(tiny_model)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = folder / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + START_TIMEOUT
        while (models := _listed_models(base_url)) is None:
            assert process.poll() is None, f"mlx_lm.server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"mlx_lm.server never answered:\n{log.read_text()}"
            time.sleep(0.2)
        assert models, f"/v1/models lists no model:\n{log.read_text()}"
        yield MlxServer(base_url, models[0], log)
    finally:
        process.kill()  # nothing to save; a graceful stop only costs time
        process.wait(timeout=30)


def test_gibberish_from_a_real_mlx_server_is_rejected_with_reasons(mlx_server, tmp_path):
    result = run_factory(
        "generate",
        "--teacher",
        mlx_server.base_url,
        "--n",
        str(TASKS),
        "--max-tokens",
        MAX_TOKENS,
        "--run",
        "mlx",
        "--output-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "mlx"
    assert read_jsonl(run / "accepted.jsonl") == []
    rejected = read_jsonl(run / "rejected.jsonl")
    assert len(rejected) == TASKS and len({r["id"] for r in rejected}) == TASKS
    reasons = {r["reason"] for r in rejected}
    assert reasons <= REJECT_REASONS, f"not a parse or check reason: {reasons - REJECT_REASONS}"
    # mlx_lm.server lists ids without `owned_by`: the factory asks for default_model, the one name that
    # keeps the served model (and its --adapter-path) instead of loading the listed id afresh.
    assert {r["meta"]["model"] for r in rejected} == {"default_model"}
    ledger = read_jsonl(run / "ledger.jsonl")
    assert sorted(e["id"] for e in ledger) == sorted(r["id"] for r in rejected)
    assert {e["status"] for e in ledger} == {"rejected"}
    report = json.loads((run / "report.json").read_text())
    assert (report["total"], report["accepted"], report["rejected"]) == (TASKS, 0, TASKS)
    assert (run / "report.md").read_text().strip()
    log = mlx_server.log.read_text()
    assert "Traceback" not in log, log
    requests = [line for line in log.splitlines() if "POST /v1/chat/completions" in line]
    attempts = sum(r["meta"]["attempts"] for r in rejected)
    assert len(requests) >= attempts and all('" 200 ' in line for line in requests), log


def test_doctor_reaches_mlx_server_and_says_the_reply_does_not_parse(mlx_server):
    # --no-stream: generate above used the streamed path, so both transports meet the real server.
    url = mlx_server.base_url
    result = run_factory("doctor", "--teacher", url, "--max-tokens", MAX_TOKENS, "--no-stream")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{url} answers /v1/models" in result.stdout
    assert "model: default_model" in result.stdout
    assert "chat call answered" in result.stdout
    assert "the reply does not parse" in result.stdout
