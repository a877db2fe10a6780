"""The fault-injecting test teacher, spoken to with the real openai client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import openai
import pytest

from factory.paths import SEEDS_DIR
from factory.plan import parse_mix, plan_tasks
from factory.prompts import render_request
from factory.seeds import load_worlds
from factory.teachers.builtin import write_turns
from factory.testing import TeacherServer, start_teacher_server
from factory.testing.teacher_server import FALLBACK_TURNS

pytestmark = pytest.mark.anyio

PROMPT = [{"role": "user", "content": "Write the dialogue."}]


@asynccontextmanager
async def client_for(server: TeacherServer, timeout: float = 10.0) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=timeout)
    try:
        yield client
    finally:
        await client.close()


async def ask(client: openai.AsyncOpenAI, stream: bool = False) -> dict[str, Any]:
    """One chat call; returns its text, finish reason, usage and the number of content chunks."""
    if not stream:
        reply = await client.chat.completions.create(model="test-teacher", messages=PROMPT)
        choice = reply.choices[0]
        return {"text": choice.message.content, "finish": choice.finish_reason, "usage": reply.usage}
    events = await client.chat.completions.create(
        model="test-teacher", messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    parts: list[str] = []
    finish, usage = None, None
    async with events:
        async for chunk in events:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
    return {"text": "".join(parts), "finish": finish, "usage": usage, "chunks": len(parts)}


async def test_models_and_replies_look_like_an_openai_server(teacher_server):
    server = teacher_server({"latency_ms": 200, "chunks": 4, "model": "tiny-teacher"})
    async with client_for(server) as client:
        models = await client.models.list()
        started = time.monotonic()
        whole = await ask(client)
        streamed = await ask(client, stream=True)
        elapsed = time.monotonic() - started
    assert [m.id for m in models.data] == ["tiny-teacher"]
    for reply in (whole, streamed):
        assert json.loads(reply["text"]) == {"turns": FALLBACK_TURNS}
        assert reply["finish"] == "stop"
        assert reply["usage"].completion_tokens > 0 and reply["usage"].prompt_tokens > 0
    assert streamed["chunks"] == 4
    assert elapsed >= 0.4  # two replies of 200 ms each
    assert server.stats()["outcomes"] == {"ok": 2}


async def test_a_rendered_request_is_answered_with_the_builtin_writers_turns(teacher_server):
    server = teacher_server({})
    tasks = plan_tasks(load_worlds(SEEDS_DIR), 6, 0, parse_mix("obedience=0.5,adversarial=0.5"))
    async with client_for(server) as client:
        for task in tasks:
            messages = render_request(task).messages
            reply = await client.chat.completions.create(model="test-teacher", messages=messages)
            assert json.loads(reply.choices[0].message.content) == {"turns": write_turns(task)}
    assert server.stats()["answered"] == [task.id for task in tasks]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_each_fault_does_what_it_says(teacher_server, stream):
    server = teacher_server({})
    async with client_for(server) as client:
        normal = (await ask(client, stream))["text"]
        server.reset({"p_malformed": 1.0})
        malformed = await ask(client, stream)
        with pytest.raises(json.JSONDecodeError):
            json.loads(malformed["text"])
        server.reset({"p_truncated": 1.0})
        truncated = await ask(client, stream)
        assert truncated["finish"] == "length" and truncated["text"] == normal[: len(normal) // 2]
        server.reset({"p_500": 1.0})
        with pytest.raises(openai.InternalServerError):
            await ask(client, stream)
        server.reset({"p_429": 1.0, "retry_after": 2.5})
        with pytest.raises(openai.RateLimitError) as limited:
            await ask(client, stream)
        assert limited.value.response.headers["retry-after"] == "3"  # whole seconds, rounded up
        assert limited.value.response.headers["retry-after-ms"] == "2500"
        server.reset({"p_drop": 1.0})
        with pytest.raises(openai.APIConnectionError):
            await ask(client, stream)
    assert server.stats()["outcomes"] == {"drop": 1}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_hang_lasts_until_the_client_disconnects(teacher_server, stream):
    server = teacher_server({"p_hang": 1.0})
    async with client_for(server) as client:
        async with anyio.create_task_group() as group:

            async def hung_call() -> None:
                with pytest.raises(openai.APITimeoutError):
                    await ask(client.with_options(timeout=0.6), stream)

            group.start_soon(hung_call)
            await anyio.sleep(0.3)
            assert (await anyio.to_thread.run_sync(server.stats))["hangs_open"] == 1
        await anyio.sleep(0.2)
    stats = server.stats()
    assert stats["hangs_open"] == 0 and stats["in_flight"] == 0
    assert stats["outcomes"] == {"hang": 1}


async def test_the_rate_limit_is_a_real_sliding_window(teacher_server):
    server = teacher_server({"rate_limit_rpm": 5, "rate_window_s": 1.0})
    async with client_for(server) as client:
        started = time.monotonic()
        await ask(client)
        first_done = time.monotonic()
        for _ in range(4):
            await ask(client)
        fifth_done = time.monotonic()
        with pytest.raises(openai.RateLimitError) as limited:
            await ask(client)
        # the wait is until the first request leaves the window, to the millisecond
        wait = int(limited.value.response.headers["retry-after-ms"]) / 1000
        assert 1.0 - (time.monotonic() - started) <= wait <= 1.0 - (fifth_done - first_done) + 0.001
        assert limited.value.response.headers["retry-after"] == "1"
        await anyio.sleep(wait)
        await ask(client)  # the oldest request left the window exactly when the server said
    assert server.stats()["outcomes"] == {"ok": 6, "rate_limited": 1}


async def test_slots_make_requests_queue_like_a_batching_server(teacher_server):
    server = teacher_server({"slots": 2, "latency_ms": 200})
    async with client_for(server) as client:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(ask, client)
        elapsed = time.monotonic() - started
    stats = server.stats()
    assert stats["max_serving"] == 2 and stats["max_in_flight"] == 6
    assert elapsed >= 0.6  # three rounds of two


async def test_faults_follow_the_seed_and_the_request_counter(teacher_server):
    config = {"p_500": 0.3, "p_429": 0.2, "seed": 7}
    server = teacher_server(config)

    async def outcomes() -> list[str]:
        async with client_for(server) as client:
            for _ in range(20):
                with suppress(openai.APIStatusError):
                    await ask(client)
        return [outcome for _, outcome, _ in (await anyio.to_thread.run_sync(server.stats))["events"]]

    first = await outcomes()
    server.reset()
    assert await outcomes() == first
    server.reset({**config, "seed": 8})
    other = await outcomes()
    assert other != first
    assert {"ok", "http_500", "http_429"} <= set(first) | set(other)


def test_a_bad_config_stops_the_server_before_ready():
    with pytest.raises(RuntimeError, match="before READY"):
        start_teacher_server({"p_typo": 0.5})


def test_a_restarted_server_comes_back_on_the_same_port():
    with start_teacher_server({}) as server:
        port = server.port
        server.stop(kill=True)
        server.start()
        assert server.port == port
        assert server.stats()["total"] == 0
