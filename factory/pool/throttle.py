"""Backing off together: when 429s become a real share of replies, the whole pool slows down.

A stray 429 only delays its own request (by its Retry-After). When 429s are a real share of
recent replies, the server's limit is being hit: the in-flight limit is halved, new sends pause
for the Retry-After, and a pace is learned from what the server accepted in the period before
the cut (counted by send time, once the pause is over and those replies are in), set a little
below it. The pace then probes upward slowly while no 429 comes back and steps down on each
round of 429s (never below PACE_FLOOR of what was learned: stray 429s must not grind it down);
the in-flight limit grows back one slot per few successes.
"""

from __future__ import annotations

import math
import time
from collections import deque

import anyio

from factory.pool.limits import Pacer

RECENT_REPLIES = 50  # the share of 429s is judged over at most this many recent replies...
RECENT_SECONDS = 10.0  # ...no older than this
# A share counts when its lower confidence bound (z = 3: 99.9 %) exceeds throttle_share: stray 429s
# at 5 % need 12 of 50 to pass (p = 5e-6); a real limit, where every new reply is a 429, passes at
# MIN_REPLIES. That floor matters: 429s come back at once while good replies take the teacher's
# latency, so the first few replies of a burst are all failures even when 429s are stray.
CONFIDENCE_Z = 3.0
MIN_REPLIES = 20
CUT_INTERVAL = 1.0  # seconds; at most one cut this often
GROW_EVERY = 10  # successes per slot the in-flight limit grows back
PACE_MARGIN = 0.95  # the learned pace sits this far below the rate the server accepted
PACE_MIN_SUCCESSES = 5  # fewer accepted requests in the period tell too little to learn a pace from
PACE_MIN_SPAN = 1.0  # seconds; a pace is never learned from a shorter stretch
PACE_STEP_UP = 1.02
PACE_STEP_DOWN = 0.9
PACE_FLOOR = 0.8  # steps down stop at this share of the learned pace; only a new cut goes lower
PACE_STEPS_PER_PERIOD = 6  # a pace step at most every period / 6: a window limit answers slowly


def wilson_lower(hits: int, n: int, z: float = CONFIDENCE_Z) -> float:
    """Lower bound of the Wilson score interval for a share of `hits` in `n`."""
    if n == 0:
        return 0.0
    p = hits / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - margin) / (1 + z2 / n)


class Throttle:
    """Owns the in-flight limit (AIMD), the global pause and the learned pace."""

    def __init__(self, limiter: anyio.CapacityLimiter, ceiling: int, share: float, period: float):
        self.limiter = limiter
        self.ceiling = ceiling
        self.share = share
        self.period = period
        self.pacer = Pacer()
        self.pause_until = 0.0
        self.cuts = 0
        self.last_429 = -math.inf
        self._recent: deque[tuple[float, bool]] = deque(maxlen=RECENT_REPLIES)  # (time, was 429)
        self._accepted: deque[float] = deque()  # send times of requests that got a reply
        self._learn_at: float | None = None  # cut time whose pace is still to be learned
        self._learned = 0.0  # the pace the last cut learned
        self._cut_wait = 0.0  # the Retry-After that came with the last cut
        self._first_sent = math.inf
        self._last_cut = -math.inf
        self._last_pace_change = -math.inf
        self._last_step_down = -math.inf
        self._credit = 0

    def pause_left(self) -> float:
        """Seconds until new sends may go (0 when not paused)."""
        return max(0.0, self.pause_until - time.monotonic())

    def throttled(self) -> bool:
        """Paused for a Retry-After, or held to a learned pace that the server enforced lately."""
        now = time.monotonic()
        recent_limit = self.pacer.rate is not None and now - self.last_429 < self.period
        return now < self.pause_until or recent_limit

    def settle(self) -> None:
        """Before a send: once a cut's pause is over, learn the pace from what the server accepted."""
        now = time.monotonic()
        if self._learn_at is None or now < self.pause_until:
            return
        cut, self._learn_at = self._learn_at, None
        accepted = sum(1 for sent in self._accepted if cut - self.period < sent <= cut)
        if accepted >= PACE_MIN_SUCCESSES:
            # What the server accepted, over the time it said that budget has to last: the
            # period for a window limit (its Retry-After runs to the window's end), or less when
            # the run is younger than a period and the server wants only a short wait.
            span = min(self.period, cut - self._first_sent + self._cut_wait)
            learned = PACE_MARGIN * accepted / max(span, PACE_MIN_SPAN)
            current = self.pacer.rate
            self.pacer.rate = self._learned = learned if current is None else min(current, learned)
            self._last_pace_change = now

    def on_reply(self, sent_at: float, ok: bool) -> None:
        """Count a reply that was not a 429 (`ok`: a usable reply, not an error)."""
        now = time.monotonic()
        self._first_sent = min(self._first_sent, sent_at)
        if sent_at >= self._last_cut:
            self._recent.append((now, False))
        if not ok:
            return
        self._accepted.append(sent_at)
        while self._accepted and self._accepted[0] <= now - 3 * self.period:
            self._accepted.popleft()
        self._credit += 1
        if self._credit >= GROW_EVERY:
            self._credit = 0
            if self.limiter.total_tokens < self.ceiling:
                self.limiter.total_tokens = int(self.limiter.total_tokens) + 1
        self._probe_up(now)

    def on_429(self, sent_at: float, wait: float | None) -> None:
        """Count a 429 for a request sent at `sent_at`; `wait` is its Retry-After in seconds."""
        now = time.monotonic()
        self.last_429 = now
        self._first_sent = min(self._first_sent, sent_at)
        if sent_at < self._last_cut:
            return  # sent before the last cut: that cut already answered it
        self._recent.append((now, True))
        if self._too_many(now):
            if now - self._last_cut >= CUT_INTERVAL:
                self._cut(now, wait)
            return
        # Paced against a window limit, even a few 429s mean the pace crept above it. The window
        # remembers the faster past for a while, so at most one step down per step interval.
        step = self.period / PACE_STEPS_PER_PERIOD
        fresh = sent_at >= self._last_pace_change and now - self._last_step_down >= step
        if self.pacer.rate is not None and fresh:
            self.pacer.rate = max(self.pacer.rate * PACE_STEP_DOWN, PACE_FLOOR * self._learned)
            self._last_pace_change = self._last_step_down = now

    def _too_many(self, now: float) -> bool:
        recent = [hit for at, hit in self._recent if at >= now - RECENT_SECONDS]
        return len(recent) >= MIN_REPLIES and wilson_lower(sum(recent), len(recent)) > self.share

    def _cut(self, now: float, wait: float | None) -> None:
        self.cuts += 1
        self._last_cut = now
        self._recent.clear()
        self._credit = 0
        self.limiter.total_tokens = max(1, int(self.limiter.total_tokens) // 2)
        self.pause_until = max(self.pause_until, now + (wait or 0.0))
        self._cut_wait = wait or 0.0
        self._learn_at = now

    def _probe_up(self, now: float) -> None:
        if self.pacer.rate is None:
            return
        step = self.period / PACE_STEPS_PER_PERIOD
        if now - self._last_pace_change < step or now - self.last_429 < step:
            return
        if self.pacer.binding(within=step):
            self.pacer.rate *= PACE_STEP_UP
            self._last_pace_change = now
