"""OpenAITeacher against a small real OpenAI-compatible server on 127.0.0.1 (starlette + uvicorn).

The server's behaviour is chosen by the model name a request asks for: "ok", "nousage",
"length", "drop" (connection cut mid-stream), "nofinish" (body ends with no finish_reason).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from factory.errors import TeacherUnreachable
from factory.models import Target, Task
from factory.teachers.base import TeacherRequest
from factory.teachers.openai_compat import FALLBACK_MODEL, NO_KEY, OpenAITeacher, read_usage

PIECES = ['{"turns": [', '{"role": "user", "content": "hi"}, ', '{"role": "assistant", "content": "hello"}]}']
TEXT = "".join(PIECES)
USAGE = {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}


class Recorder:
    """What the server saw and what it lists; reset before each test."""

    def __init__(self) -> None:
        self.models: list[str] = ["served-model"]
        self.owned_by = True  # OpenAI, vLLM and Ollama send owned_by; mlx_lm.server does not
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.model_calls = 0
        self.chunks_sent = 0


REC = Recorder()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}
    return f"data: {json.dumps(data)}\n\n"


async def _events(model: str) -> AsyncIterator[str]:
    pieces = PIECES[:2] if model in ("drop", "nofinish") else PIECES
    for piece in pieces:
        REC.chunks_sent += 1
        yield _chunk(model, {"role": "assistant", "content": piece})
        await anyio.sleep(0)
    if model == "drop":
        raise ConnectionResetError("test server cuts the connection mid-stream")
    if model == "nofinish":
        return
    REC.chunks_sent += 1
    yield _chunk(model, {}, "length" if model == "length" else "stop")
    if model != "nousage":
        REC.chunks_sent += 1
        usage_chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model}
        yield f"data: {json.dumps({**usage_chunk, 'choices': [], 'usage': USAGE})}\n\n"
    yield "data: [DONE]\n\n"


async def chat(request: Request) -> Any:
    """POST /v1/chat/completions: record the request, answer as the model name says."""
    body = await request.json()
    REC.bodies.append(body)
    REC.headers.append(dict(request.headers))
    model = body["model"]
    if body.get("stream"):
        return StreamingResponse(_events(model), media_type="text/event-stream")
    finish = "length" if model == "length" else "stop"
    reply = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": finish}],
    }
    if model != "nousage":
        reply["usage"] = USAGE
    return JSONResponse(reply)


async def models(request: Request) -> JSONResponse:
    """GET /v1/models: the ids in REC.models."""
    REC.model_calls += 1
    owner = {"owned_by": "test"} if REC.owned_by else {}
    data = [{"id": m, "object": "model", "created": 0, **owner} for m in REC.models]
    return JSONResponse({"object": "list", "data": data})


APP = Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def fresh_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    REC.__init__()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


TASK = Task(
    id="t-1",
    kind="obedience",
    family="answer_from_state",
    world="w",
    sample_index=0,
    state={"user": {"name": "Ann"}},
    expect="answer",
    user_turns=1,
    target=Target(field="user.name", present=True, value="Ann"),
)
REQUEST = TeacherRequest(
    task_id="t-1",
    messages=[{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 40}],
    max_tokens=64,
    temperature=0.7,
    est_tokens=84,
)


def ask(teacher: OpenAITeacher, progress: list[float] | None = None) -> Any:
    """Run one complete() call and close the teacher."""
    calls = progress if progress is not None else []

    async def main() -> Any:
        try:
            return await teacher.complete(REQUEST, TASK, lambda: calls.append(time.monotonic()))
        finally:
            await teacher.aclose()

    return anyio.run(main)


def resolve(teacher: OpenAITeacher) -> str:
    """Run resolve_model() and close the teacher."""

    async def main() -> str:
        try:
            return await teacher.resolve_model()
        finally:
            await teacher.aclose()

    return anyio.run(main)


def test_model_resolution_takes_the_first_listed_id(base_url: str) -> None:
    REC.models = ["first-model", "second-model"]
    assert resolve(OpenAITeacher(base_url)) == "first-model"
    assert REC.model_calls == 1


def test_mlx_lm_server_listing_means_default_model(base_url: str) -> None:
    """mlx_lm.server's entries have no owned_by; naming a listed id would reload it without the adapter."""
    REC.models = ["mlx-community/Other-Model-4bit", "/models/served"]
    REC.owned_by = False
    assert resolve(OpenAITeacher(base_url)) == "default_model"


def test_empty_model_list_falls_back_to_default_model(base_url: str) -> None:
    REC.models = []
    teacher = OpenAITeacher(base_url)
    assert resolve(teacher) == FALLBACK_MODEL == "default_model"
    assert teacher.model == "default_model"


def test_given_model_is_used_without_asking_the_server(base_url: str) -> None:
    assert resolve(OpenAITeacher(base_url, model="ok")) == "ok"
    assert REC.model_calls == 0


def test_concurrent_first_calls_resolve_the_model_once(base_url: str) -> None:
    REC.models = ["ok"]
    teacher = OpenAITeacher(base_url)

    async def main() -> None:
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(teacher.complete, REQUEST, TASK, lambda: None)
        finally:
            await teacher.aclose()

    anyio.run(main)
    assert REC.model_calls == 1
    assert [b["model"] for b in REC.bodies] == ["ok"] * 5


def test_streamed_reply_text_usage_and_progress(base_url: str) -> None:
    progress: list[float] = []
    reply = ask(OpenAITeacher(base_url, model="ok"), progress)
    assert reply.text == TEXT
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (42, 17)
    assert reply.model == "ok"
    assert reply.latency_s > 0
    assert len(progress) == REC.chunks_sent == len(PIECES) + 2  # content chunks, finish, usage


def test_request_body_is_portable(base_url: str) -> None:
    ask(OpenAITeacher(base_url, model="ok"))
    (body,) = REC.bodies
    for forbidden in ("response_format", "n", "seed"):
        assert forbidden not in body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == REQUEST.messages
    assert (body["max_tokens"], body["temperature"]) == (64, 0.7)


def test_keyless_server_gets_placeholder_key_and_env_key_wins(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ask(OpenAITeacher(base_url, model="ok"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    ask(OpenAITeacher(base_url, model="ok"))
    ask(OpenAITeacher(base_url, model="ok", api_key="sk-given"))
    keys = [h["authorization"] for h in REC.headers]
    assert keys == [f"Bearer {NO_KEY}", "Bearer sk-from-env", "Bearer sk-given"]


def test_missing_usage_is_estimated(base_url: str) -> None:
    reply = ask(OpenAITeacher(base_url, model="nousage"))
    assert reply.text == TEXT
    assert reply.prompt_tokens == 20  # 80 prompt characters / 4
    assert reply.completion_tokens == -(-len(TEXT) // 4)


def test_finish_reason_length_is_passed_through(base_url: str) -> None:
    assert ask(OpenAITeacher(base_url, model="length")).finish_reason == "length"
    assert ask(OpenAITeacher(base_url, model="length", stream=False)).finish_reason == "length"


def test_connection_dropped_mid_stream_raises_api_connection_error(base_url: str) -> None:
    progress: list[float] = []
    with pytest.raises(openai.APIConnectionError):
        ask(OpenAITeacher(base_url, model="drop"), progress)
    assert progress, "chunks before the drop still count as progress"


def test_stream_ending_without_finish_reason_raises_api_connection_error(base_url: str) -> None:
    with pytest.raises(openai.APIConnectionError, match="finish_reason"):
        ask(OpenAITeacher(base_url, model="nofinish"))


def test_non_streamed_reply(base_url: str) -> None:
    progress: list[float] = []
    reply = ask(OpenAITeacher(base_url, model="ok", stream=False), progress)
    assert (reply.text, reply.finish_reason) == (TEXT, "stop")
    assert (reply.prompt_tokens, reply.completion_tokens) == (42, 17)
    assert len(progress) == 1
    (body,) = REC.bodies
    assert "stream_options" not in body and not body.get("stream")
    assert not {"response_format", "n", "seed"} & set(body)


def test_http_errors_propagate_as_openai_types(base_url: str) -> None:
    root = base_url.removesuffix("/v1")  # no /v1: every route is a 404
    with pytest.raises(openai.NotFoundError):
        ask(OpenAITeacher(root, model="ok"))


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def probe(teacher: OpenAITeacher) -> None:
    """Run probe() and close the teacher."""

    async def main() -> None:
        try:
            await teacher.probe()
        finally:
            await teacher.aclose()

    anyio.run(main)


def test_probe_passes_when_the_server_answers(base_url: str) -> None:
    probe(OpenAITeacher(base_url))
    assert REC.model_calls == 1


def test_probe_on_closed_port_names_the_url(base_url: str) -> None:
    url = _closed_port_url()
    with pytest.raises(TeacherUnreachable) as caught:
        probe(OpenAITeacher(url, probe_timeout=2.0))
    message = str(caught.value)
    assert url in message
    assert "mlx_lm.server" in message and "/v1" in message


def test_probe_without_v1_says_the_base_url_must_end_in_v1(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    with pytest.raises(TeacherUnreachable, match="must end in /v1") as caught:
        probe(OpenAITeacher(root))
    assert root in str(caught.value)


def test_complete_on_closed_port_raises_connection_error() -> None:
    with pytest.raises(openai.APIConnectionError):
        ask(OpenAITeacher(_closed_port_url(), model="ok"))


def test_read_usage_prefers_server_counts() -> None:
    class ServerUsage:
        prompt_tokens = 7
        completion_tokens = 3

    messages = [{"role": "user", "content": "abcdefgh"}]
    assert read_usage(ServerUsage(), messages, "xyz") == (7, 3, False)
    assert read_usage(None, messages, "abcde") == (2, 2, True)
