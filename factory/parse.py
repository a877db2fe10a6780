"""Teacher text → the dialogue's user/assistant turns, repairing what real teachers get wrong.

Repairs: <think> reasoning, Markdown fences and prose around the JSON (the JSON is found by a
string-aware bracket scan, so fences or braces inside contents do not confuse it), trailing
commas, smart quotes around keys, raw newlines inside strings, {"turns"|"messages"|"dialogue": [...]}
or a bare list, and a leading system turn. Everything else is rejected with a TeacherReplyError
whose `reason` is one of REASONS.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from factory.errors import TeacherReplyError
from factory.models import Message, Task

REASONS = (
    "truncated",
    "no_json",
    "invalid_json",
    "bad_shape",
    "wrong_turn_count",
    "empty_turn",
    "missing_payload",
    "role_order",
)
T = TypeVar("T")
TURN_KEYS = ("turns", "messages", "dialogue", "conversation")
MAX_CANDIDATES = 32  # JSON starts tried before giving up; bounds the work on prose full of brackets

_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_OPENERS = {"{": "}", "[": "]"}
_SMART_KEY = re.compile(r"[“”„‟″]([^\"“”„‟″\n]{1,80}?)[“”„‟″](\s*:)")
_SMART_VALUE = re.compile(r"(:\s*)[“”„‟″]([^\"“”„‟″\n]{0,80}?)[“”„‟″](?=\s*[,}\]])")


def _bodies(text: str) -> list[str]:
    """The reply without its reasoning: the texts to search for JSON, most likely first."""
    stripped = text.lstrip()
    if stripped[:7].lower() == "<think>":
        close = _THINK_CLOSE.search(stripped)
        return [stripped[close.end() :] if close else ""]  # unclosed: the reply is all reasoning
    close = _THINK_CLOSE.search(text)
    if close and "<think>" not in text[: close.start()].lower():
        # Reasoning ended by a bare </think> (the opening tag was in the chat template), unless the
        # tag is only mentioned inside the dialogue: then the whole text is the answer.
        return [text[close.end() :], text]
    return [text]


def _json_chars(text: str, start: int = 0) -> Iterator[tuple[int, str, bool]]:
    """Yield (index, char, inside a JSON string) for text[start:]; quotes count as inside."""
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            yield i, ch, True
        else:
            in_string = ch == '"'
            yield i, ch, in_string


def _scan_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start`, or None if it never closes."""
    stack = [_OPENERS[text[start]]]
    for i, ch, quoted in _json_chars(text, start + 1):
        if quoted:
            continue
        if ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in "}]":
            if ch != stack.pop():
                return None
            if not stack:
                return i + 1
    return None


def _drop_trailing_commas(text: str) -> str:
    """Remove commas that directly precede } or ] outside strings."""
    out: list[str] = []
    pending: int | None = None  # index in `out` of a comma that may be trailing
    for _, ch, quoted in _json_chars(text):
        if quoted:
            pending = None
        elif ch == ",":
            pending = len(out)
        elif ch in "}]" and pending is not None:
            out[pending] = ""
            pending = None
        elif not ch.isspace():
            pending = None
        out.append(ch)
    return "".join(out)


def _loads(text: str) -> Any:
    # strict=False accepts raw newlines and tabs inside strings, a common teacher slip.
    return json.loads(text, strict=False)


def _parse_candidate(text: str) -> tuple[Any, str | None]:
    """Parse one JSON candidate, trying the repairs when the plain parse fails."""
    try:
        return _loads(text), None
    except (ValueError, RecursionError) as exc:
        first_error = str(exc)
    repaired = _SMART_KEY.sub(r'"\1"\2', text)
    repaired = _SMART_VALUE.sub(r'\1"\2"', repaired)
    repaired = _drop_trailing_commas(repaired)
    try:
        return _loads(repaired), None
    except (ValueError, RecursionError):
        return None, first_error


def _turn_list(value: Any, depth: int = 0) -> list[Any] | None:
    """The list of turns inside a parsed value, or None when it has no recognisable shape."""
    if isinstance(value, list):
        return value if value and all(isinstance(item, dict) for item in value) else None
    if not isinstance(value, dict):
        return None
    for key in TURN_KEYS:
        if isinstance(value.get(key), list):
            return value[key]
    if depth < 2:  # one or two wrapper objects, e.g. {"dialogue": {"turns": [...]}}
        for inner in value.values():
            if isinstance(inner, dict) and (turns := _turn_list(inner, depth + 1)) is not None:
                return turns
    return None


def _next_opener(text: str, pos: int) -> int | None:
    starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
    return min(starts) if starts else None


def _find_value(text: str, pick: Callable[[Any], T | None], shape: str) -> T:
    """The first JSON value in `text` that `pick` accepts (what it returns); else why none is."""
    outcomes: list[str] = []  # per candidate: "unterminated" | "invalid" | "parsed"
    error = ""
    pos = 0
    while len(outcomes) < MAX_CANDIDATES and (start := _next_opener(text, pos)) is not None:
        end = _scan_end(text, start)
        if end is None:
            # Unclosed: maybe a stray bracket in prose, so look for JSON inside and after it.
            outcomes.append("unterminated")
            pos = start + 1
            continue
        pos = end
        value, err = _parse_candidate(text[start:end])
        if err is not None:
            error = error or err
            outcomes.append("invalid")
            continue
        picked = pick(value)
        if picked is not None:
            return picked
        outcomes.append("parsed")
    if not outcomes:
        raise TeacherReplyError("no_json", "the reply holds no JSON object or list")
    if outcomes[0] == "unterminated":
        raise TeacherReplyError("invalid_json", "the JSON never closes (was the reply cut off?)")
    if "parsed" in outcomes:
        raise TeacherReplyError("bad_shape", shape)
    raise TeacherReplyError("invalid_json", error or "unbalanced brackets")


def _normalise(turns: list[Any]) -> list[Message]:
    """Check each turn is {role, content} with text, and drop a leading system turn."""
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise TeacherReplyError("bad_shape", f"turn {i} is a {type(turn).__name__}, not an object")
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise TeacherReplyError("bad_shape", f"turn {i} needs string 'role' and 'content'")
        role = role.strip().lower()
        if role not in ("system", "user", "assistant"):
            raise TeacherReplyError("bad_shape", f"turn {i} has unknown role {role!r}")
        messages.append({"role": role, "content": content.strip()})
    while messages and messages[0]["role"] == "system":
        messages.pop(0)
    return messages


def _check(messages: list[Message], task: Task) -> None:
    """Raise for the first rule the turns break: order, count, emptiness, payload."""
    if not messages:
        raise TeacherReplyError("wrong_turn_count", f"0 user turns, the task asks for {task.user_turns}")
    for i, message in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if message["role"] != want:
            raise TeacherReplyError("role_order", f"turn {i} is {message['role']!r}, expected {want!r}")
    if not messages or messages[-1]["role"] != "assistant":
        raise TeacherReplyError("role_order", "the dialogue must end with an assistant turn")
    users = len(messages) // 2
    if users != task.user_turns:
        raise TeacherReplyError(
            "wrong_turn_count", f"{users} user turns, the task asks for {task.user_turns}"
        )
    for i, message in enumerate(messages):
        if not message["content"]:
            raise TeacherReplyError("empty_turn", f"turn {i} ({message['role']}) is empty")
    payload = (task.target.payload or "").strip()
    if payload and not any(payload in m["content"] for m in messages if m["role"] == "user"):
        raise TeacherReplyError("missing_payload", "no user turn carries the attack payload verbatim")


def parse_turns(text: str, finish_reason: str | None, task: Task) -> list[Message]:
    """Turn a teacher reply into user/assistant turns; TeacherReplyError (with a reason) if unusable."""
    if finish_reason == "length":
        # A reply cut at max_tokens may still parse (a shorter dialogue), but it is not what was asked.
        raise TeacherReplyError("truncated", "the reply hit max_tokens; raise --max-tokens")
    turns = find_in_reply(text, _turn_list, 'expected {"turns": [...]} or a list of turns')
    messages = _normalise(turns)
    _check(messages, task)
    return messages


def find_in_reply(text: str, pick: Callable[[Any], T | None], shape: str) -> T:
    """The first JSON value of a teacher reply that `pick` accepts, with reasoning skipped and repairs tried.

    `pick` returns what it wants from a parsed value, or None to look further. TeacherReplyError
    says why nothing was found: no_json, invalid_json (never closes, or beyond repair) or
    bad_shape (JSON, but nothing `pick` accepts; `shape` says what was expected).
    """
    bodies = _bodies(text or "")
    for body in bodies[:-1]:
        with contextlib.suppress(TeacherReplyError):
            return _find_value(body, pick, shape)
    return _find_value(bodies[-1], pick, shape)
