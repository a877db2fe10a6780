"""The violation record every rule returns."""

from __future__ import annotations

from typing import TypedDict


class Violation(TypedDict):
    """One problem: the rule that found it and what a person should fix."""

    rule: str
    detail: str


def violation(rule: str, detail: str) -> Violation:
    """Build a violation record."""
    return {"rule": rule, "detail": detail}


def short(text: str, limit: int = 80) -> str:
    """A quote of `text` short enough for a violation detail."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
