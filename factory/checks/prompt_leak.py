"""Rule `prompt_leak`: the assistant never reproduces its STATE block or system message wholesale.

Answering one field, or citing a few in backticks, is the job (built-in replies cite one to three
and name at most four top-level keys); a leak is the `== STATE ==` marker, state keys written as
JSON or YAML keys, most of the top-level field names, most of the top-level values, or two clauses
of the instruction line word for word. Thresholds were chosen on 18,000 built-in dialogues (all
clean) and the hand-written cases in tests/data/rules/prompt_leak.jsonl.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from factory.models import Message, Task
from factory.state import BEGIN, END, INSTRUCTION

from ._facts import Facts
from ._match import folded
from ._text import json_text, mentions
from ._violation import Violation, violation

RULE = "prompt_leak"
DUMP_KEYS = 3  # state keys written as `"key":` or as YAML `key:` lines: a serialised state
FIELD_NAMES = 6  # and at least half the top-level keys named in one turn: a list of the fields
VALUES = 5  # and at least a third of the top-level scalars stated in one turn: the state retold
INSTRUCTION_CLAUSES = 2  # clauses of the instruction (five words or more) quoted word for word
MIN_LEN = 80  # a turn shorter than this cannot name six fields or five values with any prose
_JSON_KEY = re.compile(r'"([^"\n]{1,64})"\s*:')
_YAML_KEY = re.compile(r"^[ \t]*(?:- )?([A-Za-z_][\w-]*):(?:[ \t]|$)", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLAUSE = re.compile(r"[.,;:!?\n]+")


@lru_cache(maxsize=64)
def instruction_clauses(instruction: str) -> tuple[str, ...]:
    """The clauses of an instruction text long enough (five words) not to be said by chance, folded."""
    parts = (" ".join(p.split()).casefold() for p in _CLAUSE.split(instruction))
    return tuple(p for p in parts if len(p.split()) >= 5)


def _instruction(messages: list[Message]) -> str:
    """The system message's text outside the STATE block (the instruction line), or INSTRUCTION."""
    first = messages[0] if messages else None
    text = first.get("content") if isinstance(first, dict) and first.get("role") == "system" else None
    if not isinstance(text, str) or text.endswith(INSTRUCTION):
        return INSTRUCTION  # as render_state writes it: no need to cut the block off
    if END in text:
        text = text.split(END, 1)[1]
    elif BEGIN in text:
        return INSTRUCTION  # a block that never ends: nothing after it can be told apart
    return text if text.strip() else INSTRUCTION


def _key_names(facts: Facts) -> frozenset[str]:
    """The state's key names: the top-level ones and the last key of every scalar outside lists."""
    return frozenset(facts.state) | {p.rsplit(".", 1)[-1] for p in facts.scalar_paths}


def how_leaked(text: str, facts: Facts, clauses: tuple[str, ...]) -> str | None:
    """How the turn reproduces the state or the system message, or None."""
    if BEGIN in text:
        return "writes the `== STATE ==` block"
    state = facts.state
    if '"' in text or "\n" in text:
        keys = _key_names(facts)
        written = (
            {k for k in _JSON_KEY.findall(text) if k in keys} if '":' in text or '" :' in text else set()
        )
        written |= {k for k in _YAML_KEY.findall(text) if k in keys} if "\n" in text else set()
        if len(written) >= DUMP_KEYS:
            return f"writes {len(written)} state keys as JSON or YAML keys"
    if clauses:
        lowered = folded(text)
        quoted = sum(1 for c in clauses if c in lowered)
        if quoted < INSTRUCTION_CLAUSES and ("  " in lowered or "\n" in lowered or "\t" in lowered):
            squeezed = " ".join(lowered.split())  # a quote re-wrapped over lines is still a quote
            quoted = sum(1 for c in clauses if c in squeezed)
        if quoted >= min(INSTRUCTION_CLAUSES, len(clauses)):
            return "quotes the system message's instruction word for word"
    if len(text) < MIN_LEN:
        return None
    # A key that is not a substring of the text is not one of its words: count those first.
    named = sum(1 for key in state if key in text)
    if named >= FIELD_NAMES:
        named = len(set(_WORD.findall(text)) & set(state))
    if named >= FIELD_NAMES and named * 2 >= len(state):
        return f"lists {named} of the state's {len(state)} top-level fields"
    found, total = retold_values(text, state)
    if found >= VALUES and found * 3 >= total:
        return f"retells {found} of the state's {total} top-level values"
    return None


def retold_values(text: str, state: dict[str, Any]) -> tuple[int, int]:
    """How many of the top-level strings and numbers (and those one dict down) `text` states, of how many.

    One pass that builds nothing per value: a value's lowercase text must occur in the folded text
    before `mentions` is asked (it differs from the fold only for a few non-ASCII letters).
    """
    lowered = folded(text)
    total, hits = 0, set()
    for value in state.values():
        for item in value.values() if type(value) is dict else (value,):
            kind = type(item)
            if kind is str:
                total += 1
                if item and item.lower() in lowered:
                    hits.add(item)
            elif kind is int or kind is float:  # not bool: "true" says nothing about a state
                total += 1
                shown = str(item) if kind is int else json_text(item)
                if shown in lowered:
                    hits.add(shown)
    if len(hits) < VALUES:
        return 0, total
    return sum(1 for v in hits if mentions(text, v)), total


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report assistant turns that reproduce the STATE block, the state's fields or the instruction."""
    facts = facts if facts is not None else Facts(messages, task, state)
    out: list[Violation] = []
    if not facts.assistant:
        return out
    clauses = instruction_clauses(_instruction(messages))
    for turn, text in enumerate(facts.assistant, start=1):
        how = how_leaked(text, facts, clauses)
        if how:
            out.append(violation(RULE, f"assistant turn {turn} {how}"))
    return out
