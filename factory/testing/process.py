"""Run the test teacher in its own process, so the factory under test keeps its CPU to itself."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0  # seconds; imports are slow on a loaded two-core machine


class TeacherServer:
    """Handle on a test-teacher subprocess: its URL, counters, reset, stop and restart."""

    module = "factory.testing.teacher_server"  # run with `python -m`; it prints READY <port>

    def __init__(self, config: dict[str, Any] | None = None, host: str = "127.0.0.1"):
        self.config = dict(config or {})
        self.host = host
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        """Server root, e.g. http://127.0.0.1:41234 (where /stats and /reset live)."""
        if self.port is None:
            raise RuntimeError(f"{self.module} has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Server root, e.g. http://127.0.0.1:41234."""
        return self.root

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give a client: <url>/v1."""
        return f"{self.url}/v1"

    def start(self) -> TeacherServer:
        """Start the process (on the previous port after a stop) and wait for READY."""
        if self.process is not None:
            raise RuntimeError("the test teacher is already running")
        command = [sys.executable, "-m", self.module, "--host", self.host, *self._args()]
        command += ["--port", str(self.port or 0), "--config", json.dumps(self.config)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        data = self._stdin()
        stdin = subprocess.PIPE if data is not None else None
        self.process = subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, env=env, cwd=PROJECT_ROOT
        )
        try:
            if data is not None:
                assert self.process.stdin is not None
                with self.process.stdin:  # the server reads stdin to its end before it listens
                    self.process.stdin.write(data)
            line = _read_line(self.process, START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{self.module} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def _args(self) -> list[str]:
        """Extra command-line arguments of the server module."""
        return []

    def _stdin(self) -> bytes | None:
        """What to write to the server's stdin before it starts (None: nothing, stdin stays ours)."""
        return None

    def stop(self, kill: bool = False) -> None:
        """End the process: SIGKILL when `kill` (a crash), else SIGTERM with a short grace."""
        process, self.process = self.process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def stats(self) -> dict[str, Any]:
        """The server's counters (GET /stats)."""
        with urllib.request.urlopen(f"{self.root}/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self, config: dict[str, Any] | None = None) -> None:
        """Zero the counters and the fault sequence; switch to `config` when given."""
        body = json.dumps({"config": config} if config is not None else {}).encode()
        request = urllib.request.Request(f"{self.root}/reset", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        if config is not None:
            self.config = dict(config)

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_teacher_server(config: dict[str, Any] | None = None, host: str = "127.0.0.1") -> TeacherServer:
    """Start a test teacher with `config` (see FaultConfig) in a subprocess; use it as a context manager."""
    return TeacherServer(config, host).start()


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the first stdout line of `process` within `timeout` seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = process.stdout.fileno()
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"test teacher printed no READY line within {timeout:g} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"test teacher exited with code {process.wait()} before READY")
            data += chunk
    return data.split(b"\n", 1)[0].decode()
