"""The OpenAI-compatible teacher: any /v1/chat/completions server (mlx_lm.server, llama.cpp, vLLM, OpenAI).

Only portable parameters are sent (model, messages, max_tokens, temperature, stream): local servers
reject or silently ignore response_format, n and seed. Transport failures propagate as the
`openai` exception types so the pool classifies every backend alike.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import openai
import orjson

try:  # openai 3.x talks through httpx2, earlier versions through httpx
    from httpx2 import Response as HTTPResponse
except ImportError:  # pragma: no cover - depends on the installed openai
    from httpx import Response as HTTPResponse  # type: ignore[no-redef]

from factory.errors import TeacherUnreachable
from factory.models import Message, Task
from factory.teachers.base import TeacherReply, TeacherRequest
from factory.teachers.http_client import make_http_client

NO_KEY = "sk-no-key-required"  # local servers want no key, but the client insists on one
FALLBACK_MODEL = "default_model"  # what mlx_lm.server calls the model it was started with


class Usage(NamedTuple):
    """Token counts of one reply, and whether they were estimated because the server sent none."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool


def read_usage(usage: Any, messages: list[Message], text: str) -> Usage:
    """Token counts from a server's `usage` object, or estimated at four characters a token."""
    if isinstance(usage, dict):  # raw streamed chunks
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion, estimated=False)
    chars = sum(len(m.get("content", "")) for m in messages)
    return Usage(math.ceil(chars / 4), math.ceil(len(text) / 4), estimated=True)


def _read_whole(response: HTTPResponse) -> tuple[str, str | None, Any, str | None]:
    """Text, finish_reason, usage and model of a non-streamed chat completion."""
    try:
        data = orjson.loads(response.content)
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        return text, choice.get("finish_reason"), data.get("usage"), data.get("model")
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        # A body that is not a chat completion is a broken reply: let the pool retry it.
        raise openai.APIResponseValidationError(
            response=response, body=response.content[:200], message=f"not a chat completion: {exc}"
        ) from exc


def _unreachable_hint(base_url: str) -> str:
    return (
        f"the teacher at {base_url} does not answer: is the server running? for mlx_lm.server: "
        "`mlx_lm.server --model <model> --port 8080`; the base URL must end in /v1 "
        "(e.g. http://127.0.0.1:8080/v1)"
    )


def pick_model(listed: list[dict[str, Any]]) -> str:
    """The model to ask for, from /v1/models entries: the first id, but 'default_model' for mlx_lm.server.

    mlx_lm.server lists every mlx model in the Hugging Face cache before the one it serves, and a
    request naming a listed id (even its own) reloads that model without its --adapter-path; only
    'default_model' means "what you were started with". Its entries are the only ones here without
    the OpenAI field `owned_by` (vLLM, Ollama, llama.cpp and OpenAI all send it).
    """
    if not listed or not all("owned_by" in entry for entry in listed):
        return FALLBACK_MODEL
    return str(listed[0]["id"])


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible HTTP API, keyless local servers included."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        stream: bool = True,
        timeout: float = 600.0,
        probe_timeout: float = 5.0,
    ):
        self.name = base_url
        self.model = model or ""  # filled by resolve_model() when not given
        self.base_url = base_url
        self.stream = stream
        self.probe_timeout = probe_timeout
        self._resolve_lock: anyio.Lock | None = None
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or NO_KEY,
            max_retries=0,  # the pool retries, with backoff shared across workers
            timeout=timeout,
            http_client=make_http_client(timeout),
        )

    async def resolve_model(self) -> str:
        """Return the model to ask for: the given one, else what /v1/models says (see `pick_model`)."""
        if self.model:
            return self.model
        if self._resolve_lock is None:
            self._resolve_lock = anyio.Lock()
        async with self._resolve_lock:  # many workers start at once; ask the server only once
            if not self.model:
                # Raw JSON, not the SDK's Model objects: whether `owned_by` is there is the point.
                response = await self.client.get("/models", cast_to=HTTPResponse)
                self.model = pick_model(orjson.loads(response.content).get("data") or [])
        return self.model

    async def complete(
        self, request: TeacherRequest, task: Task, on_progress: Callable[[], None]
    ) -> TeacherReply:
        """Ask the server for one completion, streamed or not, and report its text and usage."""
        model = await self.resolve_model()
        started = time.monotonic()
        body: dict[str, Any] = {
            "model": model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if self.stream:
            text, finish_reason, usage, served_by = await self._streamed(body, on_progress)
        else:
            response = await self.client.post("/chat/completions", body=body, cast_to=HTTPResponse)
            on_progress()
            text, finish_reason, usage, served_by = _read_whole(response)
        counts = read_usage(usage, request.messages, text)
        return TeacherReply(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=counts.prompt_tokens,
            completion_tokens=counts.completion_tokens,
            model=served_by or model,
            latency_s=time.monotonic() - started,
        )

    async def _streamed(
        self, body: dict[str, Any], on_progress: Callable[[], None]
    ) -> tuple[str, str | None, Any, str | None]:
        """Read a streamed completion: text, finish_reason, usage (or None) and the model served.

        The request goes through the client's generic `post` (its documented way to make custom
        requests) and the SSE lines are decoded with orjson: the typed `create()` path spends more
        CPU transforming params and building a pydantic model per chunk than the rest of a request
        costs, and a real server sends one chunk per token.
        """
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        served_by: str | None = None
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        response = await self.client.post("/chat/completions", body=body, cast_to=HTTPResponse, stream=True)
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments and blank keep-alive lines
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read on to the end of the body rather than break: closing a half-read response
                    # drops its keep-alive connection, and a new connection per request costs both sides.
                    continue
                on_progress()
                chunk = orjson.loads(data)
                served_by = served_by or chunk.get("model")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
                    finish_reason = choice.get("finish_reason") or finish_reason
        except Exception as exc:
            # The HTTP library's transport errors (httpx or httpx2, by openai version) and a garbled
            # event line both mean the reply was cut: retryable like a dropped connection.
            raise openai.APIConnectionError(
                message=f"the stream broke mid-reply: {exc!r}", request=response.request
            ) from exc
        finally:
            await response.aclose()
        if finish_reason is None:
            # A clean end of body without a finish_reason means the server or a proxy cut the reply.
            raise openai.APIConnectionError(
                message="the stream ended without a finish_reason (connection dropped mid-reply)",
                request=response.request,
            )
        return "".join(parts), finish_reason, usage, served_by

    async def probe(self) -> None:
        """Raise TeacherUnreachable (naming the URL and what to check) unless the server answers."""
        try:
            await self.client.models.list(timeout=self.probe_timeout)
        except openai.APIConnectionError as exc:  # includes timeouts
            raise TeacherUnreachable(_unreachable_hint(self.base_url)) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TeacherUnreachable(
                f"the teacher at {self.base_url} refused the API key (HTTP {exc.status_code}): "
                "pass --api-key or set OPENAI_API_KEY"
            ) from exc
        except openai.NotFoundError as exc:
            raise TeacherUnreachable(
                f"the teacher at {self.base_url} has no /models endpoint (HTTP 404): "
                "the base URL must end in /v1 (e.g. http://127.0.0.1:8080/v1)"
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise TeacherUnreachable(
                    f"the teacher at {self.base_url} answered HTTP {exc.status_code}: "
                    "is the model still loading? check the server's log"
                ) from exc
            # Any other answer (429 included) means the server is up.

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.close()
