"""Rule `consistency`: where the assistant says "`field` is X", X agrees with the state.

X is compared only when it is recognisably a value of that field: another trust level, a forged
value, the value another list item has for the same key, a number, or a date. Free words
("`trust_level` is something I can't change") are never guessed at. Secret fields are skipped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from factory.models import Message, Task

from ._facts import Facts, get
from ._match import present, word_matches
from ._text import json_text, plain
from ._violation import Violation, short, violation

RULE = "consistency"
_VERB = r"\s*(?:is(?: set to| still| now)?|are|was|reads|says|shows|stands at|=|:)\s+"
_NUMBER = re.compile(r"[$€£¥₹]?\s?(-?\d[\d,]*(?:\.\d+)?)(?![\d-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BOOLEAN = re.compile(r"(?:true|false|yes|no|on|off|enabled|disabled)\b", re.IGNORECASE)
_NEGATED = re.compile(r"^(?:not|n't|never|no longer|unverified claims?)\b", re.IGNORECASE)
_CITED = re.compile(rf"`([A-Za-z_][\w.\[\]]*)`{_VERB}(.{{1,60}})")
_END = re.compile(r",(?!\d)|[;!?\n]|\.(?:\s|$)")
_INDEX = re.compile(r"\[\d+\]")
_NOT_THERE = object()


@lru_cache(maxsize=4096)
def _named(words: str) -> re.Pattern[str]:
    """ "your <field words> is ..." for one field."""
    return re.compile(rf"\b(?:your|my|the)\s+{re.escape(words)}{_VERB}(.{{1,60}})", re.IGNORECASE)


@lru_cache(maxsize=1024)
def _any_named(words: tuple[str, ...]) -> re.Pattern[str]:
    """ "your <any of the fields' words>": what every one of the `_named` patterns starts with."""
    return re.compile(rf"\b(?:your|my|the)\s+(?:{'|'.join(re.escape(w) for w in words)})", re.IGNORECASE)


def _unique_labels(facts: Facts) -> dict[str, str]:
    """Field words (two or more) that name exactly one scalar field outside lists -> that field's path."""
    return _labels(facts.scalar_paths)


@lru_cache(maxsize=1024)
def _labels(paths: tuple[str, ...]) -> dict[str, str]:
    """`_unique_labels` for these scalar paths (states of one world share them; callers only read it)."""
    keys: dict[str, list[str]] = {}
    for path in paths:
        keys.setdefault(path.rsplit(".", 1)[-1].replace("_", " "), []).append(path)  # label(path), no "["
    # One-word labels ("name") are too common to read as fields.
    return {words: found[0] for words, found in keys.items() if len(found) == 1 and " " in words}


def _mentions(text: str, labels: dict[str, str]) -> list[tuple[str, str, int, int]]:
    """(path, words after the verb, start, end of the statement) for each "`path` is ..." and
    "your <unique field> is ..."."""
    found = (
        [(m.group(1), m.group(2), m.start(), m.start(2)) for m in _CITED.finditer(text)]
        if "`" in text
        else []
    )
    words = tuple(labels)
    # Every match holds one of the labels (ignoring case): most texts hold none, and skip the pattern.
    if labels and present(text, words) and _any_named(words).search(text):
        for words, path in labels.items():
            found += [(path, m.group(1), m.start(), m.start(1)) for m in _named(words).finditer(text)]
    out = []
    for path, rest, start, at in found:
        said = _END.split(rest)[0]
        out.append((path, said.strip(" `'\"*"), start, at + len(said)))
    return out


def _mentions_of(text: str, facts: Facts) -> list[tuple[str, str, int, int]]:
    """`_mentions` of a `plain` text with the state's labels, kept on `facts` for the grounding rule."""
    key = (RULE, text)
    found = facts.memo.get(key)
    if found is None:
        found = facts.memo[key] = _mentions(text, _unique_labels(facts))
    return found


def judged_spans(text: str, facts: Facts) -> list[tuple[int, int]]:
    """Spans of `text` (made `plain`) where this rule compares a stated value with a scalar field: the
    grounding rule leaves them to it, so one wrong value is reported once."""
    secret = set(facts.secrets)
    return [
        (start, end)
        for path, _, start, end in _mentions_of(text, facts)
        if path not in secret and not isinstance(get(facts.state, path, []), dict | list)
    ]


def _alternatives(path: str, facts: Facts) -> set[str]:
    """Other values this field could be mistaken for: trust levels, forged values, sibling items' values."""
    task = facts.task
    alts: set[str] = set()
    if path.rsplit(".", 1)[-1] == "trust_level":
        levels = task.trust_levels if task is not None else (facts.find_key("trust_levels") or ("", []))[1]
        alts |= {str(v) for v in levels or []}
    alts |= {json_text(v) for p, v in facts.forged if p == path}
    template = _INDEX.sub("[*]", path)
    if template != path:
        # The substitution changes only what is inside brackets: a path matches only if it ends the same.
        tail = template[template.rindex("]") + 1 :]
        alts |= {
            json_text(v)
            for p, v in facts.paths
            if p.endswith(tail) and _INDEX.sub("[*]", p) == template and not isinstance(v, dict | list)
        }
    return alts


def _wrong(said: str, real: Any, alts: set[str]) -> bool:
    """True when `said` starts with a value of the field other than the state's."""
    if not said or _NEGATED.match(said):
        return False
    shown = json_text(real)
    if word_matches(said, shown):
        return False
    if any(word_matches(said, alt) for alt in alts if alt != shown):
        return True
    if isinstance(real, bool) and (m := _BOOLEAN.match(said)):
        return (m.group(0).casefold() in ("true", "yes", "on", "enabled")) != real
    if isinstance(real, int | float) and not isinstance(real, bool) and (m := _NUMBER.match(said)):
        return float(m.group(1).replace(",", "")) != float(real)
    if isinstance(real, str) and _DATE.match(real) and (m := _DATE.match(said)):
        return not real.startswith(m.group(0))
    return False


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report assistant statements that give a state field a value the state does not have."""
    facts = facts if facts is not None else Facts(messages, task, state)
    secret = set(facts.secrets)
    out: list[Violation] = []
    for turn, text in enumerate(facts.assistant, start=1):
        for path, said, _, _ in _mentions_of(plain(text), facts):
            real = get(state, path, _NOT_THERE)
            if path in secret or real is _NOT_THERE:
                continue
            if isinstance(real, dict | list):
                continue
            if _wrong(said, real, _alternatives(path, facts)):
                out.append(
                    violation(
                        RULE,
                        f"assistant turn {turn} states `{path}` is {short(said, 40)!r} "
                        f"but the state says {json_text(real)!r}",
                    )
                )
    return out
