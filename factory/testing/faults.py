"""The test teacher's fault plan and counters: which reply each request gets, and what was served.

Fault choice is deterministic from the server's seed and the request counter, so a test that
sends requests in the same order meets the same faults. The rate limit is a real sliding window.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import anyio

# Faults drawn per request, in this order; the first whose cumulative probability covers the draw wins.
FAULTS = ("http_429", "http_500", "hang", "malformed", "truncated", "drop")


@dataclass
class FaultConfig:
    """What the test teacher does wrong, and how fast it answers."""

    latency_ms: float = 0.0  # total per reply; spread over `chunks` pieces when streaming
    chunks: int = 4  # streamed content pieces per reply
    slots: int | None = None  # serve at most this many at once; the rest queue
    p_429: float = 0.0
    retry_after: float = 1.0  # seconds, sent with injected 429s
    p_500: float = 0.0
    p_hang: float = 0.0  # accept, then never answer until the client disconnects
    p_malformed: float = 0.0  # reply text is not JSON
    p_truncated: float = 0.0  # finish_reason "length" with half the text
    p_drop: float = 0.0  # close the connection mid-reply
    rate_limit_rpm: int | None = None  # real limit: accepted requests per sliding window
    rate_window_s: float = 60.0  # the window of rate_limit_rpm; tests shorten it
    seed: int = 0
    model: str = "test-teacher"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaultConfig:
        """Build a config from a JSON dict, rejecting unknown keys so typos do not pass silently."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown teacher-server config keys: {unknown}; known: {sorted(known)}")
        config = cls(**data)
        if sum(config.probabilities()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        return config

    def probabilities(self) -> tuple[float, ...]:
        """Probabilities in the order of FAULTS."""
        return (self.p_429, self.p_500, self.p_hang, self.p_malformed, self.p_truncated, self.p_drop)


class ServerState:
    """Config, request counter, the rate-limit window and every counter /stats reports."""

    def __init__(self, config: FaultConfig):
        self.reset(config)

    def reset(self, config: FaultConfig | None = None) -> None:
        """Forget all requests and counters; optionally switch to a new config."""
        if config is not None:
            self.config = config
        self.slots = anyio.Semaphore(self.config.slots) if self.config.slots else None
        self.counter = 0
        self.window: deque[float] = deque()  # monotonic times of requests the rate limit accepted
        self.events: list[tuple[float, str, str | None]] = []  # (wall time, outcome, task id)
        self.outcomes: Counter[str] = Counter()
        self.answered: list[str] = []  # task ids whose reply was delivered in full
        self.answered_at: list[float] = []  # wall times of those deliveries, for throughput
        self.in_flight = 0
        self.max_in_flight = 0
        self.serving = 0  # holding a slot (not queued)
        self.max_serving = 0
        self.hangs_open = 0

    def decide(self) -> str:
        """Pick this request's outcome: "ok" or one of FAULTS, from seed and counter."""
        n = self.counter
        self.counter += 1
        draw = random.Random(f"{self.config.seed}:{n}").random()
        edge = 0.0
        for name, p in zip(FAULTS, self.config.probabilities(), strict=True):
            edge += p
            if draw < edge:
                return name
        return "ok"

    def rate_limit_wait(self) -> float | None:
        """Admit a request under the sliding-window limit; else the seconds until one slot frees."""
        limit = self.config.rate_limit_rpm
        if limit is None:
            return None
        now = time.monotonic()
        span = self.config.rate_window_s
        while self.window and self.window[0] <= now - span:
            self.window.popleft()
        if len(self.window) < limit:
            self.window.append(now)
            return None
        return self.window[-limit] + span - now

    def record(self, outcome: str, task_id: str | None) -> None:
        """Count one request's outcome at its arrival time."""
        self.events.append((time.time(), outcome, task_id))
        self.outcomes[outcome] += 1

    def enter(self) -> Callable[[], None]:
        """A request arrived and is being handled; returns the call that ends it (the first call counts).

        A reply ends it just before its last byte goes out: once the client has that byte it may
        send its next request, and this handler's own clean-up could run after that one arrives.
        """
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        ended = False

        def leave() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.in_flight -= 1

        return leave

    def snapshot(self) -> dict[str, Any]:
        """The /stats body."""
        return {
            "total": len(self.events),
            "outcomes": dict(self.outcomes),
            "events": self.events,
            "answered": self.answered,
            "answered_at": self.answered_at,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_serving": self.max_serving,
            "hangs_open": self.hangs_open,
        }


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (rounded up, as HTTP requires) and exact in retry-after-ms."""
    seconds = max(seconds, 0.0)
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(math.ceil(seconds * 1000))}
