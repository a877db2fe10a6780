"""What went wrong with one attempt, whether it is worth another, and how long the server asked us to wait.

Teachers raise the `openai` exception types (see teachers/base.py); a raw transport error from a
streaming read is recognised by its class name, so no HTTP library is imported here.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai

from factory.errors import FactoryError

RATE_LIMITED = "rate_limited"  # 429: the server wants fewer requests
SERVER_ERROR = "server_error"  # 5xx, 408, 409, a garbled body: worth another try
TIMEOUT = "timeout"  # the client gave up waiting
CONNECT = "connect"  # could not connect at all: counts towards the breaker
DROPPED = "dropped"  # the connection broke mid-reply
STALL = "stall"  # no progress for longer than the stall limit (cancelled by the watchdog)
FATAL = "fatal"  # a 4xx that another try cannot fix

RETRYABLE = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECT, DROPPED, STALL})
_CONNECT_CAUSES = {"ConnectError", "ConnectTimeout"}  # httpx's names for "never reached the server"
_TRANSPORT_BASES = {"TransportError"}  # httpx: every network-level failure


class PoolError(FactoryError):
    """A request failed for good: retries ran out or the teacher refused it; the runner rejects the task."""

    def __init__(self, reason: str, detail: str = "", attempts: int = 0):
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StallError(Exception):
    """The watchdog cancelled an attempt: no progress (or no reply) for longer than allowed."""

    def __init__(self, waited: float, limit: float, overtime: bool = False):
        self.waited = waited
        self.limit = limit
        self.overtime = overtime
        what = "no reply within the request timeout" if overtime else "no progress"
        super().__init__(f"{what}: {waited:.1f} s (limit {limit:.1f} s)")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify(exc: BaseException) -> str | None:
    """The failure kind of an attempt's exception, or None when it is not a teacher failure (a bug)."""
    if isinstance(exc, StallError):
        return STALL
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return RATE_LIMITED
        if status >= 500 or status in (408, 409):
            return SERVER_ERROR
        return FATAL
    if isinstance(exc, openai.APIConnectionError | TimeoutError) or _TRANSPORT_BASES & _class_names(exc):
        causes = _causes(exc)
        if any(_CONNECT_CAUSES & _class_names(cause) for cause in causes):
            return CONNECT
        if any(isinstance(c, openai.APITimeoutError | TimeoutError) for c in causes):
            return TIMEOUT
        if any("Timeout" in type(c).__name__ for c in causes):
            return TIMEOUT
        return DROPPED
    if isinstance(exc, openai.APIError):
        return SERVER_ERROR  # an error event mid-stream, or a body that is not the API's shape
    return None


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, Retry-After seconds or HTTP date), if any."""
    response: Any = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def describe(exc: BaseException) -> str:
    """A short human-readable account of one failure, for a rejected record's detail."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"{exc.message} ({type(cause).__name__}: {cause})" if cause else exc.message
    return f"{type(exc).__name__}: {exc}"
