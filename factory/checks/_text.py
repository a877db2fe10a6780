"""Text helpers the rules share: turns by role, sentences, cue lists from lexicon.yaml, value matching.

The checks run on every generated dialogue, so what is pure and asked again is cached: sentences and
clauses of a text (several rules split the same reply), the cue patterns, and the matcher of each
value (`_match.Word`, which needs no compiled pattern: states bring new values with every dialogue).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cache
from pathlib import Path
from re import _constants, _parser  # type: ignore[attr-defined]
from typing import Any

import orjson
import yaml

from factory.models import Message

from ._match import Word, fold, folded, word
from ._memo import per_dialogue

LEXICON_FILE = Path(__file__).with_name("lexicon.yaml")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|;\s*")
_CLAUSE_END = re.compile(r",\s*|\s+(?:but|although|though|however)\s+|\s+[—–-]\s+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "\u00a0": " "})
_LIST_INDEX = re.compile(r"\[\d+\]")
_UTC = re.compile(r"\b(?:UTC|GMT|Zulu)\b")
# Plain lexicon entries share one boundary test instead of one per entry (five times fewer steps per
# character when nothing matches); the match, and so every verdict, is the same.
_BEFORE, _AFTER = r"(?<![\w'])", r"(?![\w])"
_LITERAL, _BRANCH, _IN = _constants.LITERAL, _constants.BRANCH, _constants.IN
_MAX_RUNS = 8  # a run through classes is kept while it has at most this many spellings


@cache
def lexicon() -> dict[str, Any]:
    """The cue lists (and the irregular verb table) of lexicon.yaml (cached)."""
    raw = yaml.safe_load(LEXICON_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if isinstance(v, list | dict)}


def _has_top_level_bar(entry: str) -> bool:
    """True when `entry` has a `|` outside groups and classes (it cannot share a boundary test)."""
    depth, i, in_class = 0, 0, False
    while i < len(entry):
        char = entry[i]
        if char == "\\":
            i += 1
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            i += 2 if entry[i + 1 : i + 2] == "^" else 1
            i += 1 if entry[i : i + 1] == "]" else 0  # a "]" right after "[" or "[^" is literal
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


@cache
def cue(name: str) -> re.Pattern[str]:
    """One compiled pattern for the lexicon list `name`; plain entries match on word boundaries.

    Equal to `(?:(?<![\\w'])e1(?![\\w]))|(?:(?<![\\w'])e2(?![\\w]))|...` (entries starting with "^"
    unwrapped), with runs of plain entries written as `(?<![\\w'])(?:(?:e1)|(?:e2))(?![\\w])`.
    """
    branches: list[str] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            branches.append(_BEFORE + "(?:" + "|".join(f"(?:{p})" for p in run) + ")" + _AFTER)
            run.clear()

    for entry in lexicon()[name]:
        if entry.startswith("^") or _has_top_level_bar(entry):
            close_run()
            wrapped = entry if entry.startswith("^") else _BEFORE + entry + _AFTER
            branches.append(f"(?:{wrapped})")
        else:
            run.append(entry)
    close_run()
    return re.compile("|".join(branches), re.IGNORECASE | re.MULTILINE)


def _literal_runs(items: Any) -> list[str] | None:
    """The texts a match of these parsed items must hold (one of them): the longest run of literal
    characters (or small classes of them) of the sequence, or of each alternative of a lone branch;
    None when there is none."""
    if len(items) == 1 and items[0][0] is _BRANCH:
        runs = [_literal_runs(alternative) for alternative in items[0][1][1]]
        return None if any(r is None for r in runs) else [t for r in runs if r for t in r]
    # `runs`: the texts the match holds at this point, one per choice of a small class ("n['’]t" holds
    # "n't" or "n’t"); all of one length, so the longest runs are the best test.
    best: list[str] = [""]
    runs = [""]
    for op, arg in items:
        if op is _LITERAL:
            runs = [r + chr(arg) for r in runs]
        elif op is _IN and len(runs) * len(arg) <= _MAX_RUNS and all(o is _LITERAL for o, _ in arg):
            runs = [r + chr(c) for r in runs for _, c in arg]
        else:
            runs = [""]
        if len(runs[0]) > len(best[0]):
            best = runs
    return best if best[0] else None


@cache
def _needed(name: str) -> tuple[str, ...] | None:
    """Folded texts one of which every match of `cue(name)` holds, or None when some entry has none.

    A literal that re matches ignoring case folds (`_match.fold`) to the folded text it matched, so a
    text whose fold holds none of these has no match: most replies are ruled out by a few `in` tests.
    """
    found: list[str] = []
    for entry in lexicon()[name]:
        runs = _literal_runs(_parser.parse(entry, re.IGNORECASE | re.MULTILINE))
        if runs is None:
            return None
        found += [fold(r) for r in runs]
    if any(not t.strip() or (len(t) < 3 and t.strip().isalnum()) for t in found):
        return None  # a blank or a one-letter word ("i") is in every reply: the test would only cost
    # A text that holds none of the shortest holds none of those that contain one of them.
    return tuple(t for t in dict.fromkeys(found) if not any(o != t and o in t for o in found))


def find_cue(text: str, name: str) -> re.Match[str] | None:
    """The first match of the lexicon list `name` in `plain(text)`, as `cue(name).search` finds it."""
    text = plain(text)
    needed = _needed(name)
    if needed is not None and not any(map(folded(text).__contains__, needed)):
        return None
    return cue(name).search(text)


def has_cue(text: str, name: str) -> bool:
    """True when `text` holds any entry of the lexicon list `name`."""
    return find_cue(text, name) is not None


def plain(text: str) -> str:
    """Text with typographic quotes and dashes made ASCII, so one pattern matches both."""
    return text if text.isascii() else text.translate(_QUOTES)  # every mapped character is non-ASCII


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


@per_dialogue
def sentences(text: str) -> tuple[str, ...]:
    """Split text into sentences (and lines), dropping empty pieces."""
    return tuple(s.strip() for s in _SENTENCE_END.split(plain(text)) if s.strip())


@per_dialogue
def clauses(sentence: str) -> tuple[str, ...]:
    """Split a sentence at commas and contrast words, so "I can't X, but I'll Y" keeps Y apart."""
    return tuple(c.strip() for c in _CLAUSE_END.split(sentence) if c.strip())


@cache
def _quote_marks() -> re.Pattern[str]:
    """Opening or closing quote marks; an apostrophe inside a word ("can't") is none."""
    return re.compile(r"""["“]|(?:^|\s)['‘]""")


def clause_hedged(
    sentence: str, start: int, end: int, before: tuple[str, ...], after: tuple[str, ...]
) -> bool:
    """True when sentence[start:end] sits in an open quote, or its clause has a cue of the lexicon
    lists `before` ahead of it or of `after` behind it: a report, refusal or condition, not a claim."""
    clause_start, clause_end = 0, len(sentence)
    for gap in _CLAUSE_END.finditer(sentence):
        if gap.end() <= start:
            clause_start = gap.end()
        elif gap.start() >= end:
            clause_end = gap.start()
            break
    if len(_quote_marks().findall(sentence[:start])) % 2 == 1:
        return True  # inside an open quote: the assistant repeats the user's words
    head, tail = sentence[clause_start:start], sentence[end:clause_end]
    return any(cue(c).search(head) for c in before) or any(cue(c).search(tail) for c in after)


@per_dialogue
def _mention_word(value: str) -> Word | None:
    """The `Word` that `mentions` looks for, or None for a blank value (never mentioned)."""
    value = value.strip()
    return word(plain(value)) if value else None


def mentions(text: str, value: str) -> bool:
    """True when `value` occurs in `text` as a whole word or number, ignoring case and spacing."""
    found = _mention_word(value)
    if found is None:
        return False
    text = plain(text)
    return found.search(text, folded(text))


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


@per_dialogue
def _datetime_forms(value: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """An ISO date-time's day forms and clock forms ("2026-04-10", "April 10, 2026"; "13:00", "1:00 pm")."""
    if "T" not in value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    day = moment.date()
    days = (day.isoformat(), *value_forms(day.isoformat()), f"{day:%B} {day.day}", f"{day.day} {day:%B}")
    hour12 = moment.hour % 12 or 12
    half = "am" if moment.hour < 12 else "pm"
    clocks = {f"{moment:%H:%M}", f"{hour12}:{moment:%M} {half}", f"{hour12}:{moment:%M}{half}"}
    if moment.minute == 0:
        clocks |= {f"{hour12} {half}", f"{hour12}{half}"}
    return tuple(sorted(set(days))), tuple(sorted(clocks))


def states_value(text: str, value: Any) -> bool:
    """True when `text` writes `value` in one of its exact forms; a date-time as its day and its clock."""
    if any(mentions(text, form) for form in value_forms(value)):
        return True
    # Teachers split a date-time ("2026-04-10 at 13:00", "April 10 at 1 pm"): both halves must be there.
    forms = _datetime_forms(value) if isinstance(value, str) else None
    if forms is None or not all(any(mentions(text, f) for f in half) for half in forms):
        return False
    # "11:00 pm UTC" for a -06:00 clock is another moment: a UTC label must match the state's offset.
    return not (_UTC.search(text) and not value.endswith(("Z", "+00:00")))


def label(path: str) -> str:
    """A field's words: `pending_tasks[0].due_date` → "due date"."""
    leaf = (_LIST_INDEX.sub("", path) if "[" in path else path).rsplit(".", 1)[-1]
    return leaf.replace("_", " ")
