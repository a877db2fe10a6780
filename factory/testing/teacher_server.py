"""An OpenAI-compatible test teacher with latency and fault injection, served by uvicorn.

Run it as `python -m factory.testing.teacher_server --port 0 --config JSON`: it prints
`READY <port>` once listening. Endpoints: GET /v1/models, POST /v1/chat/completions (streamed or
not), GET /stats, POST /reset (optional body {"config": {...}}). Replies answer the task spec in
the last user message with the built-in writer's turns, so checks can pass on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from factory.attack_writer import attack_request_count
from factory.models import Task
from factory.prompts import extract_task_spec
from factory.teachers.builtin import write_turns
from factory.testing.faults import FaultConfig, ServerState, retry_after_headers

# Answer for a prompt without a task spec: small, and shaped like a real reply.
FALLBACK_TURNS = [
    {"role": "user", "content": "Which timezone am I in?"},
    {"role": "assistant", "content": "Your timezone is Europe/Berlin (user.timezone in the state)."},
]
MALFORMED_TEXT = "Sure! Here is the dialogue you asked for:\nUser: hello\nAssistant: hi there"


class DropConnection(Exception):
    """Raised after part of a reply is sent, so uvicorn closes the connection mid-reply."""


class _QuietDrops(logging.Filter):
    """Keep the deliberate drops out of uvicorn's error log; real errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


def written_attacks(task: Task, k: int) -> list[str]:
    """`k` attacks on `task` as the phrase banks word them, each drawn under its own id."""
    variants = (dataclasses.replace(task, id=f"{task.id}.a{j}") for j in range(k))
    return [next(m["content"] for m in write_turns(v) if m["role"] == "user") for v in variants]


def answer_for(messages: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The reply text for a request and the task id it answers (None without a task spec).

    An attack-writer request (factory.attack_writer) is answered with a JSON list of attacks, a
    dialogue request with the built-in writer's turns.
    """
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    spec = extract_task_spec(user) if isinstance(user, str) else None
    if spec is None:
        return orjson.dumps({"turns": FALLBACK_TURNS}).decode(), None
    task = Task.from_dict(spec)
    count = attack_request_count(messages)
    if count is not None:
        return orjson.dumps(written_attacks(task, count)).decode(), f"{task.id}.attacks"
    return orjson.dumps({"turns": write_turns(task)}).decode(), task.id


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "code": None, "param": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _pieces(text: str, n: int) -> list[str]:
    """Split text into n nearly equal consecutive pieces (fewer when the text is shorter)."""
    n = max(1, min(n, len(text)))
    step = -(-len(text) // n)
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


class Reply:
    """One chat reply (an ASGI app) served under the fault plan; it notices when the client goes away."""

    def __init__(
        self, server: ServerState, body: dict[str, Any], outcome: str, text: str, task_id: str | None
    ):
        self.server = server
        self.body = body
        self.outcome = outcome
        self.task_id = task_id
        self.last_byte: Callable[[], None] = lambda: None  # called just before the reply's last byte
        self.stream = bool(body.get("stream"))
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.text = text[: len(text) // 2] if outcome == "truncated" else text
        self.finish = "length" if outcome == "truncated" else "stop"
        self.id = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        self.created = int(time.time())
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        self.usage = {
            "prompt_tokens": max(1, prompt_chars // 4),
            "completion_tokens": max(1, len(self.text) // 4),
        }
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the reply; stop at once if the client disconnects (that is what ends a hang)."""
        dropped = False
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            try:
                await self._serve(send)
            except DropConnection:
                dropped = True
            group.cancel_scope.cancel()
        if dropped:
            raise DropConnection(self.id)

    async def _serve(self, send: Send) -> None:
        config = self.server.config
        slots = self.server.slots
        if slots is not None:
            await slots.acquire()
        self.server.serving += 1
        self.server.max_serving = max(self.server.max_serving, self.server.serving)
        try:
            if self.stream:
                await self._send_stream(send, config)
            else:
                await self._send_whole(send, config)
        finally:
            self.server.serving -= 1
            if slots is not None:
                slots.release()

    async def _hang(self) -> None:
        self.server.hangs_open += 1
        try:
            await anyio.sleep_forever()
        finally:
            self.server.hangs_open -= 1

    async def _send_whole(self, send: Send, config: FaultConfig) -> None:
        if self.outcome == "hang":
            await self._hang()
        await anyio.sleep(config.latency_ms / 1000)
        payload = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": config.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.text},
                        "finish_reason": self.finish,
                    }
                ],
                "usage": self.usage,
            }
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.outcome == "drop":
            await send(
                {"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True}
            )
            raise DropConnection(self.id)
        self.last_byte()
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        self._delivered()

    async def _send_stream(self, send: Send, config: FaultConfig) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.outcome == "hang":
            await self._hang()
        pieces = _pieces(self.text, config.chunks)
        pause = config.latency_ms / 1000 / len(pieces)
        for index, piece in enumerate(pieces):
            if self.outcome == "drop" and index >= max(1, len(pieces) // 2):
                raise DropConnection(self.id)
            await anyio.sleep(pause)
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            await self._event(send, [{"index": 0, "delta": delta, "finish_reason": None}])
        if self.outcome == "drop":  # a one-piece reply still drops before finishing
            raise DropConnection(self.id)
        await self._event(send, [{"index": 0, "delta": {}, "finish_reason": self.finish}])
        if self.include_usage:
            await self._event(send, [], usage=self.usage)
        self.last_byte()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        self._delivered()

    async def _event(self, send: Send, choices: list[dict[str, Any]], usage: Any = None) -> None:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.server.config.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                "more_body": True,
            }
        )

    def _delivered(self) -> None:
        if self.outcome == "ok" and self.task_id is not None:
            self.server.answered.append(self.task_id)
            self.server.answered_at.append(time.time())


class ChatEndpoint:
    """POST /v1/chat/completions: decide the outcome, count it, and serve it."""

    def __init__(self, server: ServerState):
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one chat request (an ASGI app, so the reply can watch for disconnects)."""
        leave = self.server.enter()
        try:
            response = await self._respond(Request(scope, receive))
            if isinstance(response, Reply):
                response.last_byte = leave  # in flight until the client can have all of it
            await response(scope, receive, send)
        except ClientDisconnect:
            pass  # the client went away before sending its whole request (a killed factory)
        finally:
            leave()

    async def _respond(self, request: Request) -> Response | Reply:
        server = self.server
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(messages, list) or not messages:
            server.record("bad_request", request.headers.get("x-task-id"))
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error")
        text, task_id = answer_for(messages)
        task_id = task_id or request.headers.get("x-task-id")
        outcome = server.decide()
        wait = server.rate_limit_wait()
        if wait is not None:
            outcome = "rate_limited"
        server.record(outcome, task_id)
        if outcome == "rate_limited":
            limit = f"{server.config.rate_limit_rpm} requests per {server.config.rate_window_s:g} s"
            return _error(429, f"Rate limit reached: {limit}", "requests", retry_after_headers(wait or 0.0))
        if outcome == "http_429":
            headers = retry_after_headers(server.config.retry_after)
            return _error(429, "Too many requests (injected)", "requests", headers)
        if outcome == "http_500":
            return _error(500, "Internal server error (injected)", "server_error")
        if outcome == "malformed":
            text = MALFORMED_TEXT
        return Reply(server, body, outcome, text, task_id)


def create_app(config: FaultConfig) -> Starlette:
    """The test teacher's ASGI app for one fault config."""
    server = ServerState(config)

    async def models(request: Request) -> Response:
        model = {"id": server.config.model, "object": "model", "created": 0, "owned_by": "factory"}
        return JSONResponse({"object": "list", "data": [model]})

    async def stats(request: Request) -> Response:
        return Response(orjson.dumps(server.snapshot()), media_type="application/json")

    async def reset(request: Request) -> Response:
        raw = await request.body()
        data = orjson.loads(raw) if raw else {}
        new = FaultConfig.from_dict(data["config"]) if "config" in data else None
        server.reset(new)
        return JSONResponse({"ok": True})

    routes = [
        Route("/v1/models", models),
        Route("/v1/chat/completions", ChatEndpoint(server), methods=["POST"]),
        Route("/stats", stats),
        Route("/reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.server = server
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the test teacher until terminated; print READY <port> once listening."""
    parser = argparse.ArgumentParser(prog="python -m factory.testing.teacher_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--config", default="{}", help="fault config as JSON (see FaultConfig)")
    args = parser.parse_args(argv)
    serve(create_app(FaultConfig.from_dict(orjson.loads(args.config))), args.host, args.port)


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve `app` with uvicorn until terminated; print READY <port> once listening."""
    # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) for sockets that say so,
    # and with Nagle on every reply waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # A restarted server must get the same port back while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made before uvicorn starts wait in the backlog
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    print(f"READY {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
