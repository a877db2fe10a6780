"""Shared fixtures: the async backend and the fault-injecting test teacher in a subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.testing import TeacherServer, start_teacher_server
from factory.testing.tiny_model import build_tiny_model
from factory.train.environment import OPENBLAS


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the factory does (aiolimiter needs it)."""
    return "asyncio"


@pytest.fixture
def teacher_server() -> Iterator[Callable[..., TeacherServer]]:
    """Start test teachers: `teacher_server({"p_500": 0.1})` -> handle with .base_url and .stats().

    Each runs in its own process on 127.0.0.1 with an OS-chosen port; all stop when the test ends.
    """
    started: list[TeacherServer] = []

    def start(config: dict[str, Any] | None = None) -> TeacherServer:
        server = start_teacher_server(config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(kill=True)  # nothing to flush; a graceful shutdown only costs time


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random llama folder mlx_lm loads offline (factory/testing/tiny_model.py), built once.

    HF_HUB_OFFLINE=1 for the session: a local folder must never turn into a hub lookup.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def mlx_env() -> dict[str, str]:
    """Environment for a subprocess that runs MLX: OpenBLAS preloaded when installed, hub offline.

    MLX's CPU wheel bundles a BLAS 10-25x slower than the system OpenBLAS; LD_PRELOAD only works
    for a new process, so training tests run `factory` in a subprocess with this environment.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if sys.platform.startswith("linux") and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    return env
