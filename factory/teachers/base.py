"""The teacher protocol every backend implements, and the request/reply records it uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from factory.models import Message, Task


@dataclass
class TeacherRequest:
    """One chat call the pool makes for a task."""

    task_id: str
    messages: list[Message]  # the rendered teacher prompt
    max_tokens: int
    temperature: float
    est_tokens: int  # prompt + completion estimate before the call, for the tokens-per-minute limiter


@dataclass
class TeacherReply:
    """What came back: the raw text, why it stopped, and the usage the server reported."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float


class Teacher(Protocol):
    """A backend that answers teacher requests.

    Transport failures are raised as the `openai` exception types (APIConnectionError,
    APITimeoutError, APIStatusError and subclasses) so the pool classifies every backend alike.
    `on_progress` is called whenever bytes or tokens arrive, so the pool can tell a stalled
    request from a slow one.
    """

    name: str  # "builtin" or the base URL
    model: str

    async def complete(
        self, request: TeacherRequest, task: Task, on_progress: Callable[[], None]
    ) -> TeacherReply:
        """Answer one request."""
        ...

    async def probe(self) -> None:
        """Raise if the teacher cannot be reached; return quietly when it answers."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
