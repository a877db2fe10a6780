"""The state's values in the forms a reply compares them in: numbers, ISO days, clock times, list sizes.

A reply writes "$1,240.50", "March 4, 2026", "1:00 pm" or "3 pending tasks"; the state holds 1240.5,
"2026-03-04T13:00:00+10:00" and a list of three. `Known` normalises both sides once per state, so
the grounding rule asks set membership, not one pattern per value.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

import orjson

from ._facts import Facts
from ._memo import lazy
from ._text import lexicon

MONTHS = {m.casefold(): i for i, m in enumerate(calendar.month_name) if m} | {
    m.casefold(): i for i, m in enumerate(calendar.month_abbr) if m
}
_ISO_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_CLOCK = re.compile(r"(?<!\d)(\d{1,2}):(\d{2})(?!\d)")
# Digits in a state string that are not part of a date or a clock: "Room 7", "olive oil 1 L", "09/29".
# Dates and clocks are matched (and dropped: the group is empty) so their digits are not read as numbers.
# Every match starts with a digit: the leading lookahead says so, and re then rejects the other
# positions of the state's JSON in one step instead of trying each branch (four times faster).
_NUMBER = re.compile(
    r"(?=\d)(?:\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?)?|\d{1,2}:\d{2}(?::\d{2})?"
    r"|(?<![\d.])((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?))"
)


def as_number(text: str) -> float | None:
    """ "$1,240.50" → 1240.5; a number word ("three") → 3.0; None when it is not a number."""
    words = lexicon()["number_words"]
    low = text.strip().casefold()
    if low in words:
        return float(words.index(low))
    digits = "".join(c for c in low if c.isdigit() or c == ".")
    try:
        return float(digits) if digits else None
    except ValueError:
        return None


def clock(hour: int, minute: int, half: str | None) -> set[str]:
    """The "HH:MM" texts a written time may stand for ("1:00 pm" → 13:00; "1:00" → 01:00 or 13:00)."""
    if half:
        hour = hour % 12 + (12 if half.startswith("p") else 0)
        return {f"{hour:02d}:{minute:02d}"}
    found = {f"{hour:02d}:{minute:02d}"}
    if hour < 12:
        found.add(f"{hour + 12:02d}:{minute:02d}")
    return found


class Known:
    """What a state holds, as the grounding rule compares it; each form made on first use."""

    def __init__(self, facts: Facts):
        self.facts = facts  # its `paths` are walked only when a value has to be looked up

    @property
    def paths(self) -> list[tuple[str, Any]]:
        """Every (path, value) of the state."""
        return self.facts.paths

    @lazy
    def json(self) -> str:
        """The state as JSON text: a day ("2026-03-04", "-03-04") or clock ("13:00") it holds is a
        substring of it, and the numbers are read off it in one pass."""
        return orjson.dumps(self.facts.state).decode()

    @lazy
    def numbers(self) -> frozenset[float]:
        """The numbers the state holds: numeric leaves and numbers inside strings (dates and clocks left
        out), read off its JSON text in one pass."""
        found: set[float] = set()
        for n in set(_NUMBER.findall(self.json)):  # each distinct text once: states repeat numbers
            if "," in n:  # "1,240" in a string is 1240; in a JSON list [1,240], 1 and 240: keep all three
                found.add(float(n.replace(",", "")))
                found.update(map(float, n.split(",")))
            elif n:
                found.add(float(n))
        found |= {round(n * 100, 6) for n in found if 0 < n < 1}  # 0.35 said as "35%"
        return frozenset(found)

    @lazy
    def sizes(self) -> frozenset[float]:
        """The size of every list in the state (a count a reply may give)."""
        return frozenset(float(len(v)) for _, v in self.paths if isinstance(v, list))

    @lazy
    def lists(self) -> dict[str, list[int]]:
        """A list field's words ("pending tasks", and its last word "tasks") → the sizes of the lists so
        named, with any `<words>_count` number beside them."""
        found: dict[str, list[int]] = {}
        for path, value in self.paths:
            leaf = path.rsplit(".", 1)[-1]
            if "[" in leaf:
                continue  # an item of a list of lists: it has no name of its own
            if isinstance(value, list):
                size = len(value)
            elif type(value) is int and leaf.endswith("_count"):
                size, leaf = value, leaf[: -len("_count")] + "s"
            else:
                continue
            words = leaf.casefold().split("_")
            for name in {" ".join(words), words[-1]}:
                found.setdefault(name, []).append(size)
        return found
