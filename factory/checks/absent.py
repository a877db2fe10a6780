"""Rule `absent`: for expect=absent the reply says the state lacks the field and invents no value for it.

An invented value is caught two ways: the reply gives the field a value ("your blood type is O+"),
or it writes a phone number, e-mail, date, time or amount that appears nowhere in the state.
"""

from __future__ import annotations

import calendar
import re
from functools import lru_cache
from typing import Any

from factory.models import Message, Task
from factory.state import iter_paths

from ._facts import Facts
from ._memo import lazy
from ._text import has_cue, label, plain
from ._violation import Violation, short, violation

RULE = "absent"
_MONTHS = "|".join(m for m in calendar.month_name if m) + "|" + "|".join(m for m in calendar.month_abbr if m)
# Kinds of concrete values a reply could invent, each with its pattern.
_KINDS = {  # most specific first: a span one kind claims is not read again as another
    "e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    "date": re.compile(
        rf"\b\d{{4}}-\d{{2}}-\d{{2}}|\b(?:{_MONTHS})\.? \d{{1,2}}\b|\b\d{{1,2}} (?:{_MONTHS})\b"
    ),
    "time": re.compile(r"\b\d{1,2}:\d{2}\b"),
    "amount": re.compile(r"[$€£¥₹]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|GBP|JPY|INR)\b"),
    "phone number": re.compile(r"(?<![\w-])\+?\d[\d ().-]{6,}\d(?![\w-])"),
}
_UNKNOWN = re.compile(
    r"^\W*(?:unknown|missing|unavailable|absent|empty|blank|null|none|unset|something|a field)\b", re.I
)


_NO_BEFORE = re.compile(r"\b(?:no|any)\s+$", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+")
_NOT_NUMBER = re.compile(r"[^\d.]")
_ISO_YEAR = re.compile(r"\d{4}-")


def _squeeze(text: str) -> str:
    return _NON_WORD.sub("", text).casefold()


def _date_key(found: str) -> str:
    """A month-name date as the "-MM-DD" it would be in an ISO date of the state."""
    words = found.replace(".", "").split()
    month_word, day = (words[0], words[1]) if not words[0].isdigit() else (words[1], words[0])
    names = [m.casefold() for m in calendar.month_name] + [m.casefold() for m in calendar.month_abbr]
    month = names.index(month_word.casefold()) % 13
    return f"-{month:02d}-{int(day):02d}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class _Leaves:
    """The state's scalar values as text, and as the value tests compare them; each made on first use."""

    def __init__(self, state: dict[str, Any], facts: Facts | None):
        self.state, self.facts = state, facts

    @lazy
    def leaves(self) -> list[str]:
        if self.facts is not None:
            return self.facts.leaves
        return [str(v) for _, v in iter_paths(self.state) if not isinstance(v, dict | list)]

    @lazy
    def numbers(self) -> list[float | None]:
        return [_number(leaf) for leaf in self.leaves]

    @lazy
    def squeezed(self) -> list[str]:
        return [_squeeze(leaf) for leaf in self.leaves]


def _in_state(kind: str, found: str, leaves: _Leaves) -> bool:
    """True when a value the reply writes is one the state has (so it is quoted, not invented)."""
    if kind == "date" and not _ISO_YEAR.match(found):
        key = _date_key(found)
        return any(key in leaf for leaf in leaves.leaves)
    if kind == "amount":
        number = _number(_NOT_NUMBER.sub("", found))
        return number is not None and any(n == number for n in leaves.numbers)
    squeezed = _squeeze(found)
    return any(squeezed in leaf for leaf in leaves.squeezed)


def invented(text: str, state: dict[str, Any], facts: Facts | None = None) -> list[str]:
    """Concrete values (kind and text) in `text` that appear nowhere in the state."""
    values = _Leaves(state, facts)
    out, taken = [], set[int]()
    text = plain(text)
    for kind, pattern in _KINDS.items():
        for match in pattern.finditer(text):
            span = set(range(*match.span()))
            if span & taken:
                continue
            taken |= span
            if not _in_state(kind, match.group(0), values):
                out.append(f"{kind} {match.group(0)!r}")
    return out


@lru_cache(maxsize=1024)
def _value_given(path: str) -> re.Pattern[str]:
    """The field, by label or path, then "is"/":"/"=" and the words after it."""
    names = "|".join(re.escape(n) for n in sorted({label(path), f"`{path}`", path}))
    return re.compile(rf"(?:{names})\s*(?:\b(?:is|are|was|were)\b(?!n['’]t)|:|=)\s*([^.;!?\n]+)", re.I)


def _gives_value(text: str, path: str) -> str | None:
    """The words after "<field> is" when the reply gives the absent field a value."""
    text = plain(text)
    for match in _value_given(path).finditer(text):
        if _NO_BEFORE.search(text, 0, match.start()):
            continue  # "No overdraft limit is listed": the field is the negated subject, not given a value
        rest = match.group(1)
        if not (_UNKNOWN.match(rest) or has_cue(rest, "negation") or has_cue(rest, "absence")):
            return match.group(0)
    return None


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report an absent-field reply that does not say so, or that states a value anyway."""
    if task is None or task.expect != "absent" or task.target.field is None:
        return []  # whether a field "should" be absent is known only from a plan
    facts = facts if facts is not None else Facts(messages, task, state)
    path = task.target.field
    final = facts.final
    out: list[Violation] = []
    if not has_cue(final, "absence"):
        out.append(
            violation(
                RULE,
                f"the final reply does not say that `{path}` is missing from the state "
                f"(reply: {short(final)!r})",
            )
        )
    given = _gives_value(final, path)
    if given:
        out.append(violation(RULE, f"the final reply gives the absent `{path}` a value: {short(given)!r}"))
    for item in invented(final, state, facts):
        out.append(
            violation(
                RULE, f"the final reply states a {item} that is not in the state while `{path}` is absent"
            )
        )
    return out
