"""The request pool: every teacher call goes through here, under limits, with retries and a watchdog.

One attempt: take an in-flight slot (a CapacityLimiter the throttle resizes), wait while the
teacher is down or the pool is paused, take a send slot from the learned pace and the configured
rpm/tpm limits, then call the teacher while the watchdog looks for stalls. tenacity decides
whether to try again and how long to wait (Retry-After first, else jittered exponential backoff).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from factory.models import Task
from factory.pool.breaker import Breaker
from factory.pool.classify import (
    CONNECT,
    DROPPED,
    FATAL,
    RATE_LIMITED,
    RETRYABLE,
    SERVER_ERROR,
    PoolError,
    StallError,
    classify,
    describe,
    retry_after,
)
from factory.pool.limits import Spend, WindowLimiter
from factory.pool.throttle import Throttle
from factory.pool.watchdog import Watchdog
from factory.teachers.base import Teacher, TeacherReply, TeacherRequest

# The counter each failure kind adds to in `Pool.stats`.
STAT_OF_KIND = {
    RATE_LIMITED: "http_429",
    SERVER_ERROR: "http_5xx",
    "stall": "stalls",
    "timeout": "timeouts",
    CONNECT: "connect_errors",
    DROPPED: "dropped",
    FATAL: "fatal",
}
# Failures that prove the teacher is reachable, so they end a run of connection failures.
ANSWERED = {RATE_LIMITED, SERVER_ERROR, FATAL, DROPPED}


class _Budget:
    """Per-request attempt bookkeeping: connection failures while the teacher is down are free."""

    __slots__ = ("attempts", "free")

    def __init__(self) -> None:
        self.attempts = 0
        self.free = 0


class Pool:
    """Runs teacher requests concurrently under limits; use as `async with Pool(teacher, settings)`.

    `rate_period` is the window of the rpm/tpm limits and of pace learning (60 s; tests shorten it).
    """

    def __init__(self, teacher: Teacher, settings: Mapping[str, Any], *, rate_period: float = 60.0):
        self.teacher = teacher
        self.rate_period = rate_period
        self._retries = max(1, int(settings["retries"]))
        self._backoff_base = float(settings["backoff_base"])
        self._backoff_max = float(settings["backoff_max"])
        concurrency = max(1, int(settings["concurrency"]))
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._throttle = Throttle(self._limiter, concurrency, float(settings["throttle_share"]), rate_period)
        self._rpm = WindowLimiter(settings["rpm"], rate_period) if settings.get("rpm") else None
        self._tpm = WindowLimiter(settings["tpm"], rate_period) if settings.get("tpm") else None
        self._watchdog = Watchdog(
            stall_min=float(settings["stall_min"]),
            stall_initial=float(settings["stall_initial"]),
            stall_factor=float(settings["stall_factor"]),
            timeout=float(settings["request_timeout"]),
        )
        self._breaker = Breaker(teacher.probe, int(settings["down_after"]), float(settings["probe_interval"]))
        self._counts: Counter[str] = Counter()
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Pool:
        stack = AsyncExitStack()
        group = await stack.enter_async_context(anyio.create_task_group())
        self._breaker.bind(group.start_soon)
        group.start_soon(self._watchdog.run)
        stack.callback(group.cancel_scope.cancel)  # runs first on exit: the helpers never finish alone
        self._stack = stack
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(kind, exc, tb)

    @property
    def state(self) -> str:
        """The teacher's state: "down" (unreachable), "throttled" (held back by 429s) or "ok"."""
        if self._breaker.down:
            return "down"
        return "throttled" if self._throttle.throttled() else "ok"

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for the progress display and reports."""
        counts = self._counts
        pace = self._throttle.pacer.rate
        return {
            "state": self.state,
            "requests": counts["requests"],
            "replies": counts["replies"],
            "retries": counts["retries"],
            "failed": counts["failed"],
            **{name: counts[name] for name in STAT_OF_KIND.values()},
            "inflight": len(self._watchdog.flights),
            "inflight_limit": int(self._limiter.total_tokens),
            "cuts": self._throttle.cuts,
            "pace_rpm": None if pace is None else round(pace * 60, 1),
            "stall_limit_s": round(min(self._watchdog.limits()), 3),
            "breaker_trips": self._breaker.trips,
            "tokens_in": counts["tokens_in"],
            "tokens_out": counts["tokens_out"],
        }

    async def complete(self, request: TeacherRequest, task: Task) -> TeacherReply:
        """Answer one request, retrying transient failures; raise PoolError when it cannot be answered."""
        if self._stack is None:
            raise RuntimeError("use the pool as `async with Pool(teacher, settings) as pool`")
        budget = _Budget()
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=lambda state: state.attempt_number - budget.free >= self._retries,
            wait=self._wait,
            retry=retry_if_exception(lambda exc: classify(exc) in RETRYABLE),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await self._attempt(request, task, budget)
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise  # not a teacher failure: a bug, let it surface
            self._counts["failed"] += 1
            why = "not retried" if kind == FATAL else f"gave up after {budget.attempts} attempts"
            raise PoolError("teacher_error", f"{describe(exc)} ({why})", budget.attempts) from exc
        return reply

    async def _attempt(self, request: TeacherRequest, task: Task, budget: _Budget) -> TeacherReply:
        budget.attempts += 1
        async with self._limiter:
            spend = await self._ready_to_send(request)
            sent_at = time.monotonic()
            self._counts["requests"] += 1
            flight = self._watchdog.start()
            ok = False
            try:
                with flight.scope:
                    reply = await self.teacher.complete(request, task, flight.progress)
                if flight.scope.cancelled_caught:
                    raise StallError(flight.waited, flight.limit, overtime=flight.reason == "overtime")
                ok = True
            except Exception as exc:
                if flight.reason is not None and not isinstance(exc, StallError):
                    # the teacher's cleanup after our cancel raised; it is still a stall
                    stall = StallError(flight.waited, flight.limit, overtime=flight.reason == "overtime")
                    self._note_failure(stall, sent_at, budget)
                    raise stall from exc
                self._note_failure(exc, sent_at, budget)
                raise
            finally:
                self._watchdog.finish(flight, ok)
        self._note_success(reply, sent_at, spend)
        return reply

    async def _ready_to_send(self, request: TeacherRequest) -> Spend | None:
        """Wait for the breaker, the pause and the pace, then spend the rpm/tpm budgets."""
        throttle = self._throttle
        while True:
            await self._breaker.wait_up()
            pause = throttle.pause_left()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            throttle.settle()
            await throttle.pacer.acquire()
            if not self._breaker.down and throttle.pause_left() <= 0:
                break
        if self._rpm is not None:
            await self._rpm.acquire(1)
        if self._tpm is not None:
            return await self._tpm.acquire(request.est_tokens)
        return None

    def _note_failure(self, exc: BaseException, sent_at: float, budget: _Budget) -> None:
        kind = classify(exc)
        if kind is None:
            return
        self._counts[STAT_OF_KIND.get(kind, kind)] += 1
        if kind == CONNECT:
            self._breaker.failure()
            if self._breaker.down:
                budget.free += 1  # waiting out an outage must not use up the task's attempts
            return
        if kind in ANSWERED:
            self._breaker.success()
        if kind == RATE_LIMITED:
            self._throttle.on_429(sent_at, retry_after(exc))
        else:
            self._throttle.on_reply(sent_at, ok=False)

    def _note_success(self, reply: TeacherReply, sent_at: float, spend: Spend | None) -> None:
        self._breaker.success()
        self._throttle.on_reply(sent_at, ok=True)
        self._counts["replies"] += 1
        self._counts["tokens_in"] += reply.prompt_tokens
        self._counts["tokens_out"] += reply.completion_tokens
        used = reply.prompt_tokens + reply.completion_tokens
        if spend is not None and self._tpm is not None and used > 0:
            self._tpm.correct(spend, used)

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the server's Retry-After if it gave one, else backoff."""
        exc = state.outcome.exception() if state.outcome else None
        kind = classify(exc) if exc is not None else None
        if kind == CONNECT and self._breaker.down:
            return 0.0  # the breaker holds the next send until a probe gets through
        if kind == RATE_LIMITED and exc is not None:
            after = retry_after(exc)
            if after is not None:
                # a little jitter so requests told the same moment do not all return at once
                return after + random.uniform(0.0, min(self._backoff_base, 0.1 * after))
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (state.attempt_number - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _count_retry(self, state: RetryCallState) -> None:
        self._counts["retries"] += 1
