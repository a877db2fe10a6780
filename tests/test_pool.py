"""The pool against the real test teacher (a subprocess) through OpenAITeacher and the real openai client.

Rate windows are shortened with `rate_period` (pool) and `rate_window_s` (server) so a "per minute"
limit can be checked in seconds; everything else runs as in production.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import openai
import pytest

from factory.defaults import resolve
from factory.models import Target, Task
from factory.pool import Pool, PoolError
from factory.pool.classify import retry_after
from factory.pool.limits import WindowLimiter
from factory.pool.throttle import Throttle
from factory.teachers.base import TeacherReply, TeacherRequest
from factory.teachers.openai_compat import OpenAITeacher
from factory.testing import FaultConfig, TeacherServer
from factory.testing.faults import ServerState

pytestmark = pytest.mark.anyio

TASK_ID: ContextVar[str | None] = ContextVar("task_id", default=None)


async def _tag_request(request: httpx2.Request) -> None:
    """Send the current task's id as X-Task-Id, so the server can pair a task's attempts."""
    task_id = TASK_ID.get()
    if task_id is not None:
        request.headers["x-task-id"] = task_id


@asynccontextmanager
async def open_pool(
    server: TeacherServer, stream: bool = True, rate_period: float = 60.0, **settings: Any
) -> AsyncIterator[Pool]:
    """A Pool over an OpenAITeacher for `server`, with settings overriding the defaults."""
    teacher = OpenAITeacher(server.base_url, model="test-teacher", stream=stream, timeout=30.0)
    teacher.probe_timeout = 1.0
    await teacher.client.close()
    teacher.client = openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key="test",
        max_retries=0,
        timeout=30.0,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_tag_request]}),
    )
    try:
        async with Pool(teacher, resolve(settings), rate_period=rate_period) as pool:
            yield pool
    finally:
        await teacher.aclose()


def make_job(i: int, messages: list[dict[str, str]] | None = None) -> tuple[TeacherRequest, Task]:
    """A request and its task, with a plain prompt (the test teacher answers it with fixed JSON)."""
    task_id = f"t{i:04d}"
    task = Task(
        id=task_id,
        kind="obedience",
        family="direct",
        world="test",
        sample_index=i,
        state={},
        expect="answer",
        user_turns=1,
        target=Target(),
    )
    if messages is None:
        messages = [
            {"role": "system", "content": "You write dialogues as JSON."},
            {"role": "user", "content": f"Write dialogue {task_id}."},
        ]
    request = TeacherRequest(task_id, messages, max_tokens=256, temperature=0.0, est_tokens=100)
    return request, task


@dataclass
class Run:
    """What a batch of tasks produced, and what the pool looked like while it ran."""

    results: dict[str, TeacherReply | PoolError] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def failures(self) -> list[PoolError]:
        return [r for r in self.results.values() if isinstance(r, PoolError)]


async def run_tasks(pool: Pool, n: int, during: Any = None) -> Run:
    """Run n tasks at once through the pool (the pool caps what is in flight); sample its stats."""
    run = Run()

    async def one(i: int) -> None:
        request, task = make_job(i)
        TASK_ID.set(task.id)
        try:
            run.results[task.id] = await pool.complete(request, task)
        except PoolError as exc:
            run.results[task.id] = exc

    async def sample() -> None:
        while True:
            run.samples.append(pool.stats)
            await anyio.sleep(0.02)

    started = time.monotonic()
    async with anyio.create_task_group() as outer:
        outer.start_soon(sample)
        if during is not None:
            outer.start_soon(during)
        async with anyio.create_task_group() as work:
            for i in range(n):
                work.start_soon(one, i)
        outer.cancel_scope.cancel()
    run.elapsed = time.monotonic() - started
    return run


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any sliding window of `window` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def event_times(stats: dict[str, Any], *outcomes: str) -> list[float]:
    return [t for t, outcome, _ in stats["events"] if not outcomes or outcome in outcomes]


async def test_concurrency_cap_holds_at_the_server(teacher_server):
    server = teacher_server({"latency_ms": 100})
    async with open_pool(server, concurrency=4) as pool:
        run = await run_tasks(pool, 20)
    stats = server.stats()
    assert not run.failures
    assert stats["max_in_flight"] == 4
    assert all(sample["inflight"] <= 4 for sample in run.samples)


async def test_rpm_limit_holds_in_every_window_counted_at_the_server(teacher_server):
    server = teacher_server({"latency_ms": 20})
    # 60 requests per 1-s window is the time-scaled twin of rpm=3600 per 60 s.
    async with open_pool(server, rate_period=1.0, concurrency=32, rpm=60) as pool:
        run = await run_tasks(pool, 130)
    assert not run.failures
    times = event_times(server.stats())
    assert len(times) == 130
    assert max_in_window(times, 1.0) <= 60
    rate = (len(times) - 1) / (max(times) - min(times))
    assert rate >= 0.85 * 60, f"achieved {rate:.1f}/s of 60/s allowed"


async def test_tpm_limit_spends_reported_usage_not_the_estimate(teacher_server):
    server = teacher_server({"latency_ms": 10})
    async with open_pool(server, rate_period=1.0, concurrency=32, tpm=2000) as pool:
        run = await run_tasks(pool, 70)
        tokens_out = pool.stats["tokens_out"] + pool.stats["tokens_in"]
    assert not run.failures
    times = event_times(server.stats())
    per_request = tokens_out / len(times)
    assert per_request < 100  # the server reports fewer tokens than the 100 each request estimated
    # Counted at the server, tokens per 1-s window stay under the limit...
    assert max_in_window(times, 1.0) * per_request <= 2000 * 1.02
    # ...and more requests fit than the estimate alone would let through (2000 / 100 per window).
    assert max_in_window(times, 1.0) > 2000 / 100 * 1.3


async def test_retry_after_is_honoured_and_stray_429s_do_not_slow_the_pool(teacher_server):
    server = teacher_server({"latency_ms": 10, "p_429": 0.06, "retry_after": 0.5, "seed": 3})
    async with open_pool(server, concurrency=16) as pool:
        run = await run_tasks(pool, 300)
    stats = server.stats()
    assert not run.failures
    assert len(stats["answered"]) == 300 == len(set(stats["answered"]))
    throttled = [(t, task) for t, outcome, task in stats["events"] if outcome == "http_429"]
    assert len(throttled) >= 10
    for at, task in throttled:
        retry = min(t for t, _, other in stats["events"] if other == task and t > at)
        assert retry - at >= 0.5, f"{task} retried {retry - at:.3f} s after a 429 asking for 0.5 s"
    assert run.samples[-1]["http_429"] == len(throttled)
    # a 6 % share of stray 429s is not a server limit: the pool keeps its full width and no pace
    assert min(sample["inflight_limit"] for sample in run.samples) == 16
    assert run.samples[-1]["cuts"] == 0 and run.samples[-1]["pace_rpm"] is None


async def test_a_real_server_limit_slows_the_whole_pool(teacher_server):
    # 100 requests per 1-s sliding window at the server; the pool is told nothing about it.
    server = teacher_server({"latency_ms": 20, "rate_limit_rpm": 100, "rate_window_s": 1.0})
    async with open_pool(server, rate_period=1.0, concurrency=8) as pool:
        run = await run_tasks(pool, 300)
    stats = server.stats()
    assert not run.failures
    assert len(set(stats["answered"])) == 300
    limited = stats["outcomes"].get("rate_limited", 0)
    assert limited / stats["total"] < 0.10, stats["outcomes"]
    assert min(sample["inflight_limit"] for sample in run.samples) < 8
    assert "throttled" in {sample["state"] for sample in run.samples}
    assert run.samples[-1]["pace_rpm"] is not None
    accepted = event_times(stats, "ok")
    steady = [t for t in accepted if t > min(accepted) + 1.0]  # after the first window's burst
    rate = (len(steady) - 1) / (max(steady) - min(steady))
    assert rate >= 0.85 * 100, f"converged to {rate:.1f}/s of 100/s"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_hang_is_detected_and_retried_within_seconds(teacher_server, stream):
    server = teacher_server({"latency_ms": 100, "p_hang": 0.03, "seed": 1})
    async with open_pool(server, stream=stream, concurrency=16, stall_min=0.5) as pool:
        run = await run_tasks(pool, 160)
    stats = server.stats()
    hangs = stats["outcomes"].get("hang", 0)
    assert hangs >= 1
    assert not run.failures
    assert len(set(stats["answered"])) == 160
    assert run.samples[-1]["stalls"] == hangs
    assert run.elapsed < 8.0  # 160 x 0.1 s over 16 slots is 1 s of work; the default timeout is 600 s
    assert stats["hangs_open"] == 0  # the pool closed the hung connections


def _seed_where_only_the_first_request_hangs(p_hang: float, n: int) -> int:
    for seed in range(1000):
        plan = ServerState(FaultConfig.from_dict({"p_hang": p_hang, "seed": seed}))
        if [plan.decide() == "hang" for _ in range(n)] == [True] + [False] * (n - 1):
            return seed
    raise AssertionError("no such seed")


async def test_a_hang_from_before_the_pace_was_learned_is_still_caught(teacher_server):
    seed = _seed_where_only_the_first_request_hangs(0.05, 60)
    server = teacher_server({"latency_ms": 20, "p_hang": 0.05, "seed": seed})
    # The first request hangs while the limit is still stall_initial (60 s); once 20 replies have
    # taught the pool the pace, the same request is judged by the learned limit and retried.
    async with open_pool(server, concurrency=4, stall_min=0.3, stall_initial=60.0) as pool:
        run = await run_tasks(pool, 60)
    assert not run.failures
    assert server.stats()["outcomes"]["hang"] == 1
    assert run.samples[-1]["stalls"] == 1
    assert run.elapsed < 5.0


async def test_server_errors_and_dropped_connections_are_retried(teacher_server):
    server = teacher_server({"latency_ms": 20, "p_500": 0.15, "p_drop": 0.15, "seed": 2})
    async with open_pool(server, concurrency=8, backoff_base=0.01, backoff_max=0.05) as pool:
        run = await run_tasks(pool, 80)
    stats = server.stats()
    assert not run.failures
    assert sorted(stats["answered"]) == sorted(run.results)  # each task answered exactly once
    assert stats["outcomes"]["http_500"] >= 5 and stats["outcomes"]["drop"] >= 5
    assert run.samples[-1]["http_5xx"] == stats["outcomes"]["http_500"]
    assert run.samples[-1]["dropped"] == stats["outcomes"]["drop"]


async def test_exhausted_retries_raise_pool_error(teacher_server):
    server = teacher_server({"p_500": 1.0})
    async with open_pool(server, retries=3, backoff_base=0.01, backoff_max=0.02) as pool:
        request, task = make_job(0)
        with pytest.raises(PoolError) as caught:
            await pool.complete(request, task)
    assert caught.value.reason == "teacher_error"
    assert "HTTP 500" in caught.value.detail and "3 attempts" in caught.value.detail
    assert server.stats()["total"] == 3


async def test_a_bad_request_is_not_retried(teacher_server):
    server = teacher_server({})
    async with open_pool(server, retries=5) as pool:
        request, task = make_job(0, messages=[])
        with pytest.raises(PoolError) as caught:
            await pool.complete(request, task)
    assert "HTTP 400" in caught.value.detail and "not retried" in caught.value.detail
    assert server.stats()["total"] == 1


async def test_a_down_teacher_pauses_the_pool_and_no_task_fails(teacher_server):
    server = teacher_server({"latency_ms": 50})
    port = server.port
    states: set[str] = set()

    async def outage() -> None:
        await anyio.sleep(0.3)
        await anyio.to_thread.run_sync(lambda: server.stop(kill=True))
        await anyio.sleep(1.0)  # without the breaker, 4 attempts with ~0.1 s backoff run out in here
        states.add(pool.state)
        await anyio.to_thread.run_sync(server.start)

    settings = {
        "retries": 4,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "down_after": 3,
        "probe_interval": 0.1,
    }
    async with open_pool(server, concurrency=4, **settings) as pool:
        run = await run_tasks(pool, 60, during=outage)
    assert server.port == port
    assert not run.failures
    assert len(run.results) == 60
    assert "down" in states | {sample["state"] for sample in run.samples}
    assert run.samples[-1]["breaker_trips"] >= 1
    assert pool.state == "ok"


def test_only_a_real_share_of_429s_cuts_the_in_flight_limit():
    draws = random.Random(0)
    stray = Throttle(anyio.CapacityLimiter(64), 64, share=0.1, period=60.0)
    for _ in range(5000):  # 6 % stray 429s among 5000 replies
        if draws.random() < 0.06:
            stray.on_429(time.monotonic(), 1.0)
        else:
            stray.on_reply(time.monotonic(), ok=True)
    assert stray.cuts == 0 and stray.limiter.total_tokens == 64

    wall = Throttle(anyio.CapacityLimiter(64), 64, share=0.1, period=60.0)
    for _ in range(50):
        wall.on_reply(time.monotonic(), ok=True)
    hits = 0
    while wall.cuts == 0:  # the server's window is full: every reply from now on is a 429
        wall.on_429(time.monotonic(), 30.0)
        hits += 1
    assert hits <= 15 and wall.limiter.total_tokens == 32
    assert 29.0 < wall.pause_left() <= 30.0


def _rate_limit_error(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, headers=headers, request=request)
    return openai.RateLimitError("slow down", response=response, body=None)


def test_retry_after_reads_milliseconds_seconds_and_http_dates():
    assert retry_after(_rate_limit_error({"retry-after-ms": "1500", "retry-after": "2"})) == 1.5
    assert retry_after(_rate_limit_error({"retry-after": "7"})) == 7.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after(_rate_limit_error({"retry-after": date}), now=1_000_000.0) == 30.0
    assert retry_after(_rate_limit_error({})) is None


async def test_window_limiter_never_lets_a_burst_exceed_the_window():
    limiter = WindowLimiter(20, period=0.2)
    sent: list[float] = []

    async def send() -> None:
        await limiter.acquire()
        sent.append(time.monotonic())

    async with anyio.create_task_group() as group:
        for _ in range(60):
            group.start_soon(send)
    assert max_in_window(sent, 0.2) <= 20
    assert max(sent) - min(sent) >= 0.4  # 60 sends at 20 per 0.2 s need at least two more windows
