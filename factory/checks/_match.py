"""Whole-word value matching without compiling a pattern per value.

`word_pattern(value)` says what "a reply mentions a value" means. States bring new values with
every dialogue, and compiling a pattern costs more than checking a whole dialogue, so `Word` finds
exactly what that pattern finds with string operations: the value's words are looked for in the
folded text (`fold`), and the boundaries are tested with the pattern's own one-character classes.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ._memo import per_dialogue

try:  # the characters re's IGNORECASE matches alike beyond simple lowercase ("s" and "ſ", "i" and "ı")
    from re._casefix import _EXTRA_CASES
except ImportError:  # pragma: no cover - another Python; `Word` then falls back to the pattern
    _EXTRA_CASES = None

# The one-character classes of word_pattern's boundaries, compiled with its flags.
_DIGIT = re.compile(r"\d", re.IGNORECASE)
_ALNUM = re.compile(r"[A-Za-z0-9_]", re.IGNORECASE)


def _fold_table() -> dict[int, int] | None:
    """Each character of an `_EXTRA_CASES` class -> one member of it (the lowest)."""
    if _EXTRA_CASES is None:
        return None
    table: dict[int, int] = {}
    for char, others in _EXTRA_CASES.items():
        members = {char, *others}
        for other in others:
            members |= set(_EXTRA_CASES.get(other, ()))
        table |= {m: min(members) for m in members if m != min(members)}
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """`text` with one character per character, equal exactly where re's IGNORECASE matches alike.

    re compares simple lowercase forms, plus the `_EXTRA_CASES` classes; `str.lower()` is the simple
    lowercase except for "İ" (two characters), which is replaced first. Checked over every code point:
    for each character c, re.compile(re.escape(c), re.I) matches exactly the characters that fold
    like c.
    """
    if text.isascii():
        return text.lower()
    return text.replace("İ", "i").lower().translate(_FOLD or {})


@per_dialogue
def folded(text: str) -> str:
    """`fold(text)`, cached: a reply is folded once for all the values looked for in it."""
    return fold(text)


def word_pattern(value: str) -> re.Pattern[str]:
    """A case-insensitive pattern for `value` that does not match inside a longer word or number."""
    left = r"(?<!\d)" if value[:1].isdigit() else r"(?<![A-Za-z0-9_])" if value[:1].isalnum() else ""
    right = r"(?!\d)" if value[-1:].isdigit() else r"(?![A-Za-z0-9_])" if value[-1:].isalnum() else ""
    body = r"\s+".join(re.escape(part) for part in value.split())
    return re.compile(left + body + right, re.IGNORECASE)


def _boundary(char: str) -> re.Pattern[str] | None:
    """The class a neighbouring character must not be in, for a value that starts or ends with `char`."""
    return _DIGIT if char.isdigit() else _ALNUM if char.isalnum() else None


class Word:
    """`word_pattern(value)` as string operations: `search` and `match` answer as the pattern's would."""

    __slots__ = ("left", "parts", "pattern", "right")

    def __init__(self, value: str):
        self.left, self.right = _boundary(value[:1]), _boundary(value[-1:])
        self.parts = tuple(fold(part) for part in value.split())
        # Without the fold table (another Python) the words cannot be compared safely: use the pattern.
        self.pattern = word_pattern(value) if _FOLD is None else None

    def _at(self, text: str, folded_text: str, start: int) -> bool:
        """True when the pattern matches `text` at `start` (`folded_text` is `fold(text)`)."""
        if start and self.left is not None and self.left.match(text, start - 1):
            return False
        end = start
        for i, part in enumerate(self.parts):
            if i:  # `\s+` between words: greedy, and the next word never starts with a space
                gap = end
                while end < len(text) and text[end].isspace():
                    end += 1
                if end == gap:
                    return False
            if not folded_text.startswith(part, end):
                return False
            end += len(part)
        return not (self.right is not None and end < len(text) and self.right.match(text, end))

    def search(self, text: str, folded_text: str) -> bool:
        """True when the pattern occurs anywhere in `text`."""
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        if not self.parts:
            return True  # a blank value: the empty pattern matches everywhere
        first = self.parts[0]
        start = folded_text.find(first)
        while start != -1:
            if self._at(text, folded_text, start):
                return True
            start = folded_text.find(first, start + 1)
        return False

    def match(self, text: str, folded_text: str) -> bool:
        """True when the pattern matches at the start of `text`."""
        if self.pattern is not None:
            return self.pattern.match(text) is not None
        return self._at(text, folded_text, 0)


@per_dialogue
def _literal(value: str) -> str | re.Pattern[str]:
    """What `has_literal` looks for: the folded value, or without the fold table its pattern."""
    return fold(value) if _FOLD is not None else re.compile(re.escape(value), re.IGNORECASE)


def has_literal(text: str, value: str) -> bool:
    """`re.search(re.escape(value), text, re.IGNORECASE) is not None`, without compiling a pattern."""
    literal = _literal(value)
    if isinstance(literal, str):
        return literal in folded(text)
    return literal.search(text) is not None


@lru_cache(maxsize=256)  # the same name lists (personas, the lexicon's foreign names) every dialogue
def _literals(values: tuple[str, ...]) -> tuple[str | re.Pattern[str], ...]:
    return tuple(_literal(v) for v in values)


def present(text: str, values: tuple[str, ...]) -> list[str]:
    """The values (in order) for which `has_literal(text, value)` holds."""
    folded_text = folded(text)
    return [
        value
        for value, literal in zip(values, _literals(values), strict=True)
        if (literal in folded_text if isinstance(literal, str) else literal.search(text) is not None)
    ]


@per_dialogue
def word(value: str) -> Word:
    """The (cached) `Word` for `value`."""
    return Word(value)


def word_matches(text: str, value: str) -> bool:
    """`word_pattern(value).match(text) is not None`, without compiling the pattern."""
    return word(value).match(text, folded(text))
