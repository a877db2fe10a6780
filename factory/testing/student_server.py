"""A table-driven OpenAI-compatible test student, served by uvicorn in its own process.

Each chat request is answered from a reply table (factory/testing/student_table.py) keyed by the
exact messages sent; an unknown conversation gets `default_reply`, or HTTP 404 when that is None.
Run it as `python -m factory.testing.student_server --table FILE [--config JSON]` (`--table -`
reads keyed entries from stdin): it prints `READY <port>`. Endpoints: GET /v1/models,
POST /v1/chat/completions (streamed or not), GET /stats (every request: model, seed/response_format/n
present, temperature, key, hit), POST /reset. Serving, streaming and fault injection (the test
teacher's FaultConfig keys) are the test teacher's own.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from factory.testing.faults import FaultConfig, ServerState, retry_after_headers
from factory.testing.process import TeacherServer
from factory.testing.student_table import TableEntry, entries_table, load_table
from factory.testing.student_table import table_key as table_key
from factory.testing.teacher_server import ChatEndpoint, Reply, _error, serve

DEFAULT_REPLY = "I don't know."  # what a student without an entry says; None in config -> HTTP 404
STUDENT_MODEL = "default_model"  # what mlx_lm.server lists, and what the eval's students ask for


class TableReply(Reply):
    """A served reply whose finish_reason comes from the table unless a fault overrides it."""

    def __init__(self, server: ServerState, body: dict[str, Any], outcome: str, entry: TableEntry):
        # The key stands as the task id, so /stats "answered" lists the keys delivered in full.
        super().__init__(server, body, outcome, entry.reply, entry.key)
        if outcome == "ok":
            self.finish = entry.finish_reason


def student_config(config: dict[str, Any] | None) -> tuple[FaultConfig, str | None]:
    """Split a config into the serving FaultConfig and the default reply; reject what a student lacks."""
    config = dict(config or {})
    default_reply = config.pop("default_reply", DEFAULT_REPLY)
    if default_reply is not None and not isinstance(default_reply, str):
        raise ValueError("default_reply must be a string, or None for HTTP 404 on a miss")
    unsupported = sorted(k for k in ("p_malformed", "rate_limit_rpm") if config.get(k))
    if unsupported:
        raise ValueError(f"{unsupported}: test-teacher settings the test student does not serve")
    return FaultConfig.from_dict({"model": STUDENT_MODEL, **config}), default_reply


class StudentState:
    """The table, the miss policy, the serving state shared with the test teacher, and the request log."""

    def __init__(self, table: dict[str, TableEntry], config: dict[str, Any] | None):
        fault_config, self.default_reply = student_config(config)
        self.table = table
        self.server = ServerState(fault_config)
        self.requests: list[dict[str, Any]] = []

    def log(self, body: dict[str, Any], key: str, hit: bool, outcome: str) -> None:
        """Record what one request asked for and how it was answered."""
        self.requests.append(
            {
                "model": body.get("model"),
                "stream": bool(body.get("stream")),
                "include_usage": bool((body.get("stream_options") or {}).get("include_usage")),
                "seed": "seed" in body,
                "response_format": "response_format" in body,
                "n": "n" in body,
                "temperature": body.get("temperature"),
                "max_tokens": body.get("max_tokens"),
                "key": key,
                "hit": hit,
                "outcome": outcome,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """The /stats body: the test teacher's counters plus the request log."""
        hits = sum(1 for r in self.requests if r["hit"])
        return {
            **self.server.snapshot(),
            "entries": len(self.table),
            "requests": self.requests,
            "hits": hits,
            "misses": len(self.requests) - hits,
        }


class StudentEndpoint(ChatEndpoint):
    """POST /v1/chat/completions: look the conversation up, then serve it like the test teacher."""

    def __init__(self, state: StudentState):
        super().__init__(state.server)  # the teacher's counting and disconnect handling
        self.state = state

    async def _respond(self, request: Request) -> Response | Reply:
        state, server = self.state, self.state.server
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(messages, list) or not messages:
            server.record("bad_request", None)
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error")
        key = table_key(messages)
        entry = state.table.get(key)
        outcome = server.decide()  # drawn for every request, so the fault sequence stays per-request
        if entry is None and state.default_reply is None:
            outcome = "not_found"
        server.record(outcome, key)
        state.log(body, key, entry is not None, outcome)
        if outcome == "not_found":
            return _error(404, f"no table entry for this conversation (key {key})", "not_found_error")
        if outcome == "http_429":
            return _error(
                429,
                "Too many requests (injected)",
                "requests",
                retry_after_headers(server.config.retry_after),
            )
        if outcome == "http_500":
            return _error(500, "Internal server error (injected)", "server_error")
        entry = entry or TableEntry(key, state.default_reply or "", "stop", "default_reply")
        return TableReply(server, body, outcome, entry)


def create_app(table: dict[str, TableEntry], config: dict[str, Any] | None = None) -> Starlette:
    """The test student's ASGI app for one table and config (FaultConfig keys + default_reply)."""
    state = StudentState(table, config)

    async def models(request: Request) -> Response:
        model = {"id": state.server.config.model, "object": "model", "created": 0, "owned_by": "factory"}
        return JSONResponse({"object": "list", "data": [model]})

    async def stats(request: Request) -> Response:
        return Response(orjson.dumps(state.snapshot()), media_type="application/json")

    async def reset(request: Request) -> Response:
        state.server.reset()
        state.requests.clear()
        return JSONResponse({"ok": True})

    routes = [
        Route("/v1/models", models),
        Route("/v1/chat/completions", StudentEndpoint(state), methods=["POST"]),
        Route("/stats", stats),
        Route("/reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.student = state
    return app


def _read_keyed(raw: bytes) -> dict[str, TableEntry]:
    """Entries already keyed and checked by the parent (start_student_server), from stdin."""
    return {e["key"]: TableEntry(**e) for e in orjson.loads(raw)}


def main(argv: list[str] | None = None) -> None:
    """Serve the test student until terminated; print READY <port> once listening."""
    parser = argparse.ArgumentParser(prog="python -m factory.testing.student_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--table", required=True, help="table file (.jsonl or .json), or - for stdin")
    parser.add_argument("--config", default="{}", help="FaultConfig keys and default_reply, as JSON")
    args = parser.parse_args(argv)
    table = _read_keyed(sys.stdin.buffer.read()) if args.table == "-" else load_table(Path(args.table))
    serve(create_app(table, orjson.loads(args.config)), args.host, args.port)


class StudentServer(TeacherServer):
    """Handle on a test-student subprocess; stop, restart and the context manager are the teacher's.

    Unlike TeacherServer, `.url` is the OpenAI base URL (<root>/v1): what a student is given.
    """

    module = "factory.testing.student_server"

    def __init__(
        self, table: dict[str, TableEntry], config: dict[str, Any] | None = None, host: str = "127.0.0.1"
    ):
        super().__init__(config, host)
        self.table = table

    @property
    def url(self) -> str:
        """The OpenAI base URL: <root>/v1."""
        return f"{self.root}/v1"

    @property
    def base_url(self) -> str:
        """Same as `.url`, the name TeacherServer uses."""
        return self.url

    def _args(self) -> list[str]:
        return ["--table", "-"]

    def _stdin(self) -> bytes:
        return orjson.dumps([asdict(e) for e in self.table.values()])

    def reset(self, config: dict[str, Any] | None = None) -> None:
        """Forget the requests and restart the fault sequence (the config is fixed at start)."""
        if config is not None:
            raise ValueError("a test student's config is fixed at start; start another one")
        super().reset()


def start_student_server(
    table: Path | str | list[dict[str, Any]],
    config: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> StudentServer:
    """Start a test student answering from `table` (a file or entries); use it as a context manager.

    `config`: `default_reply` (str, or None for HTTP 404 on a miss), `model` (default_model) and
    the test teacher's FaultConfig keys (latency_ms, chunks, p_500, ...). A bad table raises
    ConfigError here, naming file:line, before any process starts.
    """
    keyed = entries_table(table) if isinstance(table, list) else load_table(Path(table))
    student_config(config)  # a bad config fails here, not as a child that never says READY
    return StudentServer(keyed, config, host).start()


if __name__ == "__main__":
    sys.exit(main())
