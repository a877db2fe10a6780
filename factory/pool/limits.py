"""Rate limits: a configured requests/tokens-per-period limit, and the pace the pool learns from 429s."""

from __future__ import annotations

import math
import time
from collections import deque

import anyio
from aiolimiter import AsyncLimiter

# Sends are timed at the client but counted at the server; a little slack in the window covers the
# difference in delivery delay between two requests (loop lag, connection setup).
GUARD_SHARE = 0.01  # of the period
GUARD_MIN = 0.1  # seconds
SLICES = 60  # the leaky bucket spreads a period's budget over this many slices (1 s for a minute)


class Spend:
    """One send in a window's log: when, and how many units it used."""

    __slots__ = ("amount", "live", "sent")

    def __init__(self, sent: float, amount: float):
        self.sent = sent
        self.amount = amount
        self.live = True  # still inside the window


class WindowLimiter:
    """At most `limit` units in ANY sliding window of `period` seconds, paced evenly.

    An aiolimiter bucket spreads the budget over the period (a leaky bucket alone lets a burst
    of its capacity through on top of the steady rate); a log of recent sends makes the sliding
    window a hard guarantee. `acquire` returns the `Spend` so the amount can be corrected once
    the real usage is known.
    """

    def __init__(self, limit: float, period: float = 60.0):
        if limit <= 0 or period <= 0:
            raise ValueError("a rate limit needs a positive limit and period")
        self.limit = float(limit)
        self.period = period
        self.window = period + max(GUARD_SHARE * period, GUARD_MIN)
        slices = max(1, min(SLICES, math.floor(limit)))
        self._bucket = AsyncLimiter(self.limit / slices, self.window / slices)
        self._log: deque[Spend] = deque()
        self._used = 0.0
        self._lock = anyio.Lock()  # one waiter at a time keeps the order first come, first served

    def used(self) -> float:
        """Units spent in the current window."""
        self._expire(time.monotonic())
        return self._used

    async def acquire(self, amount: float = 1.0) -> Spend:
        """Wait until `amount` fits, spend it, and return its log entry for `correct`."""
        amount = min(float(amount), self.limit)  # one oversized request may still go on its own
        async with self._lock:
            await self._bucket.acquire(min(amount, self._bucket.max_rate))
            while True:
                now = time.monotonic()
                self._expire(now)
                if self._used + amount <= self.limit + 1e-9:
                    break
                await anyio.sleep(self._free_at(amount) - now)
            entry = Spend(now, amount)
            self._log.append(entry)
            self._used += amount
            return entry

    def correct(self, entry: Spend, amount: float) -> None:
        """Replace an entry's estimate with what was really used (tokens the server reported)."""
        if entry.live:
            self._used += amount - entry.amount
        entry.amount = amount

    def _expire(self, now: float) -> None:
        while self._log and self._log[0].sent <= now - self.window:
            gone = self._log.popleft()
            gone.live = False
            self._used -= gone.amount
        if not self._log:
            self._used = 0.0  # no float drift across a quiet window

    def _free_at(self, amount: float) -> float:
        """When enough old entries will have left the window for `amount` to fit."""
        excess = self._used + amount - self.limit
        for entry in self._log:
            excess -= entry.amount
            if excess <= 1e-9:
                return entry.sent + self.window + 1e-3
        return time.monotonic() + self.window  # unreachable while amount <= limit


class Pacer:
    """Spaces sends at most `rate` per second; `rate` is None (no pacing) until the pool learns one."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._next = 0.0
        self.last_wait = -math.inf  # when a send last had to wait: the pace is what limits us

    async def acquire(self) -> None:
        """Reserve the next send slot and sleep until it comes."""
        if self.rate is None:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            self.last_wait = now
            await anyio.sleep(slot - now)

    def binding(self, within: float) -> bool:
        """Whether some send waited for the pace in the last `within` seconds."""
        return self.rate is not None and time.monotonic() - self.last_wait <= within
