"""Circuit breaker: a teacher that stops accepting connections pauses the pool instead of failing tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

PROBE_TIMEOUT = 10.0  # seconds one reachability probe may take, at least


class Breaker:
    """Trips after `down_after` consecutive connection failures; probes until the teacher answers."""

    def __init__(self, probe: Callable[[], Awaitable[None]], down_after: int, interval: float):
        self.probe = probe
        self.down_after = max(1, down_after)
        self.interval = interval
        self.down = False
        self.trips = 0
        self.probes = 0
        self._failures = 0
        self._up: anyio.Event | None = None
        self._spawn: Callable[..., Any] | None = None

    def bind(self, spawn: Callable[..., Any]) -> None:
        """Give the breaker a task group's start_soon to run its probe loop in."""
        self._spawn = spawn

    def success(self) -> None:
        """The teacher answered (any HTTP reply counts): it is up."""
        self._failures = 0
        if self.down:
            self._recover()

    def failure(self) -> None:
        """A connection could not be made."""
        self._failures += 1
        if not self.down and self._failures >= self.down_after:
            self.down = True
            self.trips += 1
            self._up = anyio.Event()
            if self._spawn is None:
                raise RuntimeError("Breaker.bind() must be called before use")
            self._spawn(self._probe_until_up)

    async def wait_up(self) -> None:
        """Return once the teacher is not marked down."""
        while self.down and self._up is not None:
            await self._up.wait()

    def _recover(self) -> None:
        self.down = False
        self._failures = 0
        if self._up is not None:
            self._up.set()

    async def _probe_until_up(self) -> None:
        while self.down:
            await anyio.sleep(self.interval)
            if not self.down:
                return
            self.probes += 1
            try:
                with anyio.fail_after(max(self.interval, PROBE_TIMEOUT)):
                    await self.probe()
            except Exception:  # any failure means "still down"; the next probe will tell
                continue
            self._recover()
