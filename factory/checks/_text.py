"""Text helpers the rules share: turns by role, sentences, cue lists from lexicon.yaml, value matching."""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from factory.models import Message

LEXICON_FILE = Path(__file__).with_name("lexicon.yaml")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|;\s*")
_CLAUSE_END = re.compile(r",\s*|\s+(?:but|although|though|however)\s+|\s+[—–-]\s+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "\u00a0": " "})


@cache
def lexicon() -> dict[str, Any]:
    """The cue lists (and the irregular verb table) of lexicon.yaml (cached)."""
    raw = yaml.safe_load(LEXICON_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if isinstance(v, list | dict)}


@cache
def cue(name: str) -> re.Pattern[str]:
    """One compiled pattern for the lexicon list `name`; plain entries match on word boundaries."""
    parts = [p if p.startswith("^") else rf"(?<![\w']){p}(?![\w])" for p in lexicon()[name]]
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE | re.MULTILINE)


def has_cue(text: str, name: str) -> bool:
    """True when `text` holds any entry of the lexicon list `name`."""
    return cue(name).search(plain(text)) is not None


def plain(text: str) -> str:
    """Text with typographic quotes and dashes made ASCII, so one pattern matches both."""
    return text.translate(_QUOTES)


def contents(messages: list[Message], role: str) -> list[str]:
    """The contents of every turn with `role`, skipping malformed turns (the format rule reports them)."""
    return [
        m["content"]
        for m in messages
        if isinstance(m, dict) and m.get("role") == role and isinstance(m.get("content"), str)
    ]


def final_assistant(messages: list[Message]) -> str:
    """The last assistant turn's content, or "" when there is none."""
    turns = contents(messages, "assistant")
    return turns[-1] if turns else ""


def sentences(text: str) -> list[str]:
    """Split text into sentences (and lines), dropping empty pieces."""
    return [s.strip() for s in _SENTENCE_END.split(plain(text)) if s.strip()]


def clauses(sentence: str) -> list[str]:
    """Split a sentence at commas and contrast words, so "I can't X, but I'll Y" keeps Y apart."""
    return [c.strip() for c in _CLAUSE_END.split(sentence) if c.strip()]


def word_pattern(value: str) -> re.Pattern[str]:
    """A case-insensitive pattern for `value` that does not match inside a longer word or number."""
    left = r"(?<!\d)" if value[:1].isdigit() else r"(?<![A-Za-z0-9_])" if value[:1].isalnum() else ""
    right = r"(?!\d)" if value[-1:].isdigit() else r"(?![A-Za-z0-9_])" if value[-1:].isalnum() else ""
    body = r"\s+".join(re.escape(part) for part in value.split())
    return re.compile(left + body + right, re.IGNORECASE)


def mentions(text: str, value: str) -> bool:
    """True when `value` occurs in `text` as a whole word or number, ignoring case and spacing."""
    return bool(value.strip()) and word_pattern(plain(value.strip())).search(plain(text)) is not None


def json_text(value: Any) -> str:
    """A value as the STATE block writes it: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def value_forms(value: Any) -> list[str]:
    """Ways a reply may write a state value and still quote it exactly (2195.3 → 2195.30, 2,195.30)."""
    if isinstance(value, bool):
        return ["true", "yes"] if value else ["false", "no"]
    if isinstance(value, int | float):
        forms = {json_text(value)}
        if isinstance(value, float) or abs(value) >= 1000:
            forms |= {
                f"{value:.2f}",
                f"{value:,.2f}",
                f"{value:,}",
                f"{value:,.0f}" if value == int(value) else "",
            }
        if isinstance(value, float) and value == int(value):
            forms.add(str(int(value)))
        words = lexicon()["number_words"]
        if isinstance(value, int) and 0 <= value < len(words):
            forms.add(words[value])
        return sorted(f for f in forms if f)
    if isinstance(value, str):
        forms = {value}
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            return [value]
        forms |= {day.strftime("%B %d, %Y"), f"{day:%B} {day.day}, {day.year}", f"{day.day} {day:%B %Y}"}
        return sorted(forms)
    return [json_text(value)]


def states_value(text: str, value: Any) -> bool:
    """True when `text` writes `value` in one of its exact forms."""
    return any(mentions(text, form) for form in value_forms(value))


def label(path: str) -> str:
    """A field's words: `pending_tasks[0].due_date` → "due date"."""
    leaf = re.sub(r"\[\d+\]", "", path).rsplit(".", 1)[-1]
    return leaf.replace("_", " ")
