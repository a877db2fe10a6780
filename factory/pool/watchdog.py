"""One watchdog for all in-flight requests: cancel those that stopped making progress.

A request is stalled when the time since its last progress exceeds the stall limit,
clamp(stall_factor x recent p95, stall_min, request_timeout), learned separately for the wait
before the first progress (queueing and prefill) and for the gaps between streamed chunks. Until
enough replies are seen the limit is stall_initial. Limits are re-evaluated on every tick, so a
request that started before the pace was learned is still caught.
"""

from __future__ import annotations

import math
import time
from collections import deque

import anyio

WARMUP_REPLIES = 20  # replies before the learned limits replace stall_initial
SAMPLES = 512  # recent samples kept per kind
TICK_MIN = 0.02  # seconds between checks, at least...
TICK_MAX = 0.5  # ...and at most


def p95(samples: deque[float]) -> float:
    """The 95th percentile of the samples (nearest rank); 0 when there are none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


class Flight:
    """One attempt in flight: when it started, when it last made progress, and how to cancel it."""

    __slots__ = ("_gaps", "first_at", "last", "limit", "progressed", "reason", "scope", "started", "waited")

    def __init__(self, gaps: deque[float]):
        self.started = self.last = time.monotonic()
        self.progressed = 0
        self.first_at: float | None = None
        self.scope = anyio.CancelScope()
        self.reason: str | None = None  # "stall" or "overtime" once the watchdog cancelled it
        self.waited = 0.0
        self.limit = 0.0
        self._gaps = gaps

    def progress(self) -> None:
        """Called by the teacher whenever bytes or tokens arrive."""
        now = time.monotonic()
        if self.progressed:
            self._gaps.append(now - self.last)
        else:
            self.first_at = now
        self.progressed += 1
        self.last = now

    def cancel(self, reason: str, waited: float, limit: float) -> None:
        """Stop the attempt; the pool turns this into a StallError and retries."""
        self.reason, self.waited, self.limit = reason, waited, limit
        self.scope.cancel()


class Watchdog:
    """Tracks every attempt in flight and learns how long a healthy one goes without progress."""

    def __init__(self, stall_min: float, stall_initial: float, stall_factor: float, timeout: float):
        self.stall_min = stall_min
        self.stall_initial = stall_initial
        self.stall_factor = stall_factor
        self.timeout = timeout
        self.replies = 0
        self.flights: set[Flight] = set()
        self._first: deque[float] = deque(maxlen=SAMPLES)  # start to first progress (or to the reply)
        self._gaps: deque[float] = deque(maxlen=SAMPLES)  # between progress calls

    def start(self) -> Flight:
        """Register a new attempt."""
        flight = Flight(self._gaps)
        self.flights.add(flight)
        return flight

    def finish(self, flight: Flight, ok: bool) -> None:
        """Unregister an attempt; a good reply teaches the limits."""
        self.flights.discard(flight)
        if not ok:
            return
        self.replies += 1
        # a reply without progress calls (not streamed) waited for all of it at once
        first_at = flight.first_at if flight.first_at is not None else time.monotonic()
        self._first.append(first_at - flight.started)

    def limits(self) -> tuple[float, float]:
        """(limit before the first progress, limit between progress calls) in seconds."""
        if self.replies < WARMUP_REPLIES:
            initial = min(self.stall_initial, self.timeout)
            return initial, initial
        first = self._clamp(self.stall_factor * p95(self._first))
        gap = self._clamp(self.stall_factor * p95(self._gaps)) if self._gaps else first
        return first, gap

    def _clamp(self, value: float) -> float:
        return min(max(value, self.stall_min), self.timeout)

    def check(self) -> None:
        """Cancel every attempt past its limit."""
        now = time.monotonic()
        first, gap = self.limits()
        for flight in list(self.flights):
            if flight.reason is not None:
                continue
            if now - flight.started > self.timeout:
                flight.cancel("overtime", now - flight.started, self.timeout)
                continue
            limit = gap if flight.progressed else first
            if now - flight.last > limit:
                flight.cancel("stall", now - flight.last, limit)

    async def run(self) -> None:
        """Check all attempts every tick, until cancelled."""
        while True:
            await anyio.sleep(min(max(min(self.limits()) / 10, TICK_MIN), TICK_MAX))
            self.check()
