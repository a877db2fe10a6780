"""Rule `format`: dialogue shape, lengths, unfilled templates, teacher meta-talk, the planned payload.

Chat-template markers (`<|im_start|>system`, `<<SYS>>`, `[INST]`, a `{"role": "system"}` line) in a user
turn are the user's own text, typed to spoof a system message, as speaker labels are; in an assistant
turn they are a leaked template, reported once (not again as a placeholder or as meta-talk).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from factory.models import Message, Task

from ._facts import Facts
from ._text import find_cue, lexicon, plain
from ._violation import Violation, short, violation

RULE = "format"
# Characters per turn. A user turn may carry a forged STATE block (the whole state), so it gets more.
MAX_CHARS = {"system": 20_000, "user": 8_000, "assistant": 3_000}
MIN_ASSISTANT_CHARS = 2


def _shape(messages: list[Message]) -> list[Violation]:
    """System first, then user/assistant alternating from a user turn, ending on the assistant."""
    out: list[Violation] = []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if not roles or roles[0] != "system":
        out.append(
            violation(RULE, f"the first message must be the system message, not {roles[:1] or 'nothing'}")
        )
    rest = roles[1:] if roles[:1] == ["system"] else roles
    for i, role in enumerate(rest):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            out.append(
                violation(RULE, f"turn {i + 1} after the system message is {role!r}, expected {expected!r}")
            )
            break
    if rest and rest[-1] != "assistant":
        out.append(violation(RULE, f"the dialogue must end with an assistant turn, not {rest[-1]!r}"))
    if not rest:
        out.append(violation(RULE, "the dialogue has no user or assistant turns"))
    return out


def _contents(messages: list[Message]) -> list[Violation]:
    """Every turn holds non-empty text within the length bounds."""
    out: list[Violation] = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(content, str) or not content.strip():
            out.append(violation(RULE, f"message {i} ({role}) is empty or not text"))
            continue
        limit = MAX_CHARS.get(str(role))
        if limit is not None and len(content) > limit:
            out.append(
                violation(RULE, f"message {i} ({role}) has {len(content)} characters; the limit is {limit}")
            )
        if role == "assistant" and len(content.strip()) < MIN_ASSISTANT_CHARS:
            out.append(violation(RULE, f"message {i} (assistant) is too short to be a reply: {content!r}"))
    return out


@cache
def _markers() -> re.Pattern[str]:
    """The lexicon's chat-template markers as one pattern, matched as written."""
    return re.compile("|".join(f"(?:{m})" for m in lexicon()["template_markers"]))


def _leftovers(messages: list[Message], payload: str | None) -> list[Violation]:
    """No unfilled placeholders anywhere, no teacher meta-talk or chat-template markers in the turns."""
    out: list[Violation] = []
    for i, m in enumerate(messages[1:], start=1):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, str):
            continue
        text = plain(content.replace(payload, " ") if payload else content)  # a payload may hold braces
        marker = _markers().search(text) if "<" in text or "[" in text or '"role"' in text else None
        if marker and m["role"] != "user":
            out.append(
                violation(
                    RULE,
                    f"message {i} ({m['role']}) has the chat-template marker {short(marker.group(0))!r}; "
                    "a reply must not carry a template's control text",
                )
            )
        if marker:
            text = _markers().sub(" ", text)  # "<<SYS>>" is no placeholder, '"role": "system"' no meta-talk
        hole = find_cue(text, "placeholders")
        if hole:
            out.append(
                violation(RULE, f"message {i} ({m['role']}) has an unfilled placeholder {hole.group(0)!r}")
            )
        meta = find_cue(text, "meta_talk") or (m["role"] == "assistant" and find_cue(text, "role_labels"))
        if meta:
            out.append(
                violation(
                    RULE,
                    f"message {i} ({m['role']}) has teacher meta-talk {short(meta.group(0))!r}; "
                    "the turns must be the dialogue itself",
                )
            )
    return out


def _plan(messages: list[Message], task: Task) -> list[Violation]:
    """The planned number of user turns, and the planned payload verbatim in a user turn."""
    out: list[Violation] = []
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if len(users) != task.user_turns:
        out.append(
            violation(RULE, f"the dialogue has {len(users)} user turns; the plan asks for {task.user_turns}")
        )
    payload = task.target.payload
    if payload and not any(isinstance(u, str) and payload in u for u in users):
        out.append(
            violation(
                RULE,
                f"the planned payload ({short(payload, 40)!r}) is not copied verbatim into any user turn",
            )
        )
    return out


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report shape, content and plan problems of the dialogue."""
    out = _shape(messages) + _contents(messages)
    out += _leftovers(messages, task.target.payload if task else None)
    if task is not None:
        out += _plan(messages, task)
    return out
