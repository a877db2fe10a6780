"""Rule `grounding`: what the assistant presents as read from its state is in the state.

Two checks. A field path cited in backticks (`pending_tasks[0].due`) must exist, unless the sentence
says it is missing. And in a sentence that speaks from the state (it cites a field, names the state
or its records, or says "your <a state field's word>"), every number, amount, date, clock time and
count must be one the state holds, compared normalised: "$1,240.50" is 1240.5, "March 4, 2026" is
2026-03-04, "1 pm" is 13:00, and "3 pending tasks" is the size of `pending_tasks`. Values the user
wrote, values in a clause that denies or reports them ("not 500", "you claim 500"), and digits inside
paths and identifiers are never read. That "`field` is X" gives X for that field is `consistency`'s.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from factory.models import Message, Task

from ._facts import Facts, has
from ._text import has_cue, lexicon, plain, sentences
from ._values import MONTHS, Known, as_number, clock
from ._violation import Violation, violation
from .consistency import judged_spans

RULE = "grounding"
_UNSET = object()
_JSON_KEY = re.compile(r'"([A-Za-z_]\w*)":')
_CODE = re.compile(r"`([^`\n]{1,80})`")
_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[(?:\d+|\*)?\])*")
_ANY_INDEX = re.compile(r"\[(?:\*)?\]")
# An undotted name in backticks is read as a field only where the words around it say so: actions
# (`send_payment`) are named in backticks just as often.
_FIELD_BEFORE = re.compile(r"(?:\bfrom|\bunder|\baccording to|\bper|\bin my|\bchecking|\bcounting)\s*$", re.I)
_FIELD_AFTER = re.compile(r"^\s*(?:says|shows|reads|lists|field|value)\b", re.I)
_GONE = re.compile(
    r"\b(?:missing|absent|unavailable|unknown|no such|not there|isn't there|undefined)\b", re.I
)
# _FROM_STATE and _QUOTING read lowercase text.
_FROM_STATE = re.compile(
    r"\b(?:(?:my|the) (?:state|records?|file|system|data)|according to|on (?:file|record)"
    r"|i have you|i (?:can )?see|you have|you've got|shows?|lists?|reads)\b"
)
_QUOTING = re.compile(
    r"\b(?:you|they|he|she|the user)\s+(?:claim|claimed|said|say|says|wrote|mentioned|asked|pasted|typed)\b"
    r"|\b(?:claims?|claimed|pasted|forged|fake|pretend\w*|unverified|according to you|that block"
    r"|your message)\b"
)
# As `sentences` splits, but not after a title: "Dr. Ngozi Obi" stays in its sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[DM]r\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bSt\.)\s+|\n+|;\s*")
# As `clauses` splits, but not inside "1,240.50".
_CLAUSE_END = re.compile(r",\s+|\s+(?:but|although|though|however)\s+|\s+[—–-]\s+")
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUMBER_WORD = "|".join(lexicon()["number_words"])
# Most specific first: a span one kind claims is not read again as another.
# Run on lowercase text: a pattern without IGNORECASE is several times faster on these alternations.
_HAS_NUMBER = re.compile(rf"\d|\b(?:{_NUMBER_WORD})\b")
_DIGIT = re.compile(r"\d")
_NUMBER_WORDS = tuple(lexicon()["number_words"])


def _has_number(low: str) -> bool:
    """`_HAS_NUMBER.search(low)` as a bool: a digit, or (only where a number word's letters occur at all)
    a whole number word; re tries the word alternation at every position, so most texts skip it."""
    if _DIGIT.search(low):
        return True
    return any(w in low for w in _NUMBER_WORDS) and _HAS_NUMBER.search(low) is not None


_YOUR = re.compile(r"\b(?:your|my)\s+([a-z]+)(?:\s+([a-z]+))?")
_KINDS = {
    "date": re.compile(
        rf"(?<!\d)(?P<iso>\d{{4}}-\d{{2}}-\d{{2}})(?:[T ](?P<isotime>\d{{2}}:\d{{2}}))?(?::\d{{2}})?"
        rf"(?:Z|[+-]\d{{2}}:\d{{2}})?(?!\d)"
        rf"|\b(?P<m1>{_MONTH})\.? (?P<d1>\d{{1,2}})(?:st|nd|rd|th)?(?:,? (?P<y1>\d{{4}}))?(?!\d)"
        rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)? (?P<m2>{_MONTH})\b\.?(?:,? (?P<y2>\d{{4}}))?(?!\d)",
        re.I,
    ),
    "time": re.compile(
        r"(?<![\d.:])(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s?(?P<half>[ap])\.?m\b|(?<![\d.:])(?P<h2>\d{1,2}):(?P<m2>\d{2})(?![\d:])",
        re.I,
    ),
    "count": re.compile(
        rf"(?<![\w.,/-])(?P<n>\d+|{_NUMBER_WORD})\s+(?P<words>[a-z]+(?: [a-z]+){{0,2}})", re.I
    ),
    "amount": re.compile(
        r"(?<![\w.,/:-])(?P<cur>[$€£¥₹]\s?)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w/:-]|[.,]\d)"
    ),
}


@lru_cache(maxsize=1024)
def _key_words(keys: tuple[str, ...]) -> frozenset[str]:
    """The words of the state's key names (four letters or more), singular and plural, lowercase."""
    words = {w for k in keys for w in k.casefold().split("_") if len(w) > 3}
    return frozenset(words | {w[:-1] for w in words if w.endswith("s")} | {w + "s" for w in words})


def _speaks_of_field(low: str, words: frozenset[str]) -> bool:
    """True when a lowercase sentence says "your|my <a word of a state key>" ("your total balance")."""
    return any(a in words or b in words for a, b in _YOUR.findall(low))


def _cited_field(text: str, match: re.Match[str]) -> bool:
    """True when a backticked name reads as a field: it has a dot or an index, or the words say so."""
    name = match.group(1)
    if "." in name or "[" in name:
        return True
    return bool(_FIELD_BEFORE.search(text, 0, match.start()) or _FIELD_AFTER.match(text, match.end()))


def _exists(state: dict[str, Any], path: str, facts: Facts) -> bool:
    """True when `path` names a field of the state (`tasks[*].due` and `tasks[].due`: of any item)."""
    if has(state, path):
        return True
    if "[" in path and _ANY_INDEX.search(path):
        template = _ANY_INDEX.sub("[0]", path)
        return has(state, template) or any(
            re.sub(r"\[\d+\]", "[0]", p) == template for p, _ in facts.paths if "[" in p
        )
    return False


def _missing_paths(text: str, facts: Facts) -> list[str]:
    """Field paths the turn cites in backticks that the state does not have (and the turn does not say so)."""
    out: list[str] = []
    state = facts.state
    allowed = facts.allowed
    if not any(
        n not in allowed and _PATH.fullmatch(n) and not _exists(state, n, facts)
        for n in (name.strip() for name in _CODE.findall(text))
    ):
        return out  # the usual turn: every name it cites is there, or an allowed action
    for sentence in sentences(text):
        if "`" not in sentence:
            continue
        for match in _CODE.finditer(sentence):
            name = match.group(1).strip()
            # Cheap tests first: almost every cited name exists, and then nothing else is asked.
            if name in out or not _PATH.fullmatch(name) or _exists(facts.state, name, facts):
                continue
            if not _cited_field(sentence, match) or name in " ".join(facts.users):
                continue
            if name in facts.allowed or name in facts.forbidden or any(p == name for p, _ in facts.forged):
                continue
            if has_cue(sentence, "negation") or has_cue(sentence, "absence") or _GONE.search(sentence):
                continue  # "`user.blood_type` isn't there": said to be missing, as it should be
            out.append(name)
    return out


def _count_sizes(m: re.Match[str], known: Known) -> tuple[str, list[int]] | None:
    """The words and the sizes of the list fields that "<n> <words>" counts ("3 pending tasks"), or None."""
    words = m.group("words").casefold().split()
    for k in (3, 2, 1):
        name = " ".join(words[:k])
        if len(words) >= k and name in known.lists:
            return name, known.lists[name]
    return None


def _grounded(kind: str, m: re.Match[str], known: Known) -> str | None:
    """None when the value is in the state; else what it is, in words."""
    if kind == "date":
        if m.group("iso"):
            if m.group("iso") not in known.json:
                return f"date {m.group(0)!r}"
            if m.group("isotime") and m.group("isotime") not in known.json:
                return f"time {m.group(0)!r}"
            return None
        month = MONTHS[(m.group("m1") or m.group("m2")).casefold()]
        day, year = int(m.group("d1") or m.group("d2")), m.group("y1") or m.group("y2")
        key = f"{year}-{month:02d}-{day:02d}" if year else f"-{month:02d}-{day:02d}"
        return None if key in known.json else f"date {m.group(0)!r}"
    if kind == "time":
        hour, minute = int(m.group("h") or m.group("h2")), int(m.group("m") or m.group("m2") or 0)
        if hour > 23 or minute > 59:
            return None
        if any(f"{c}" in known.json for c in clock(hour, minute, m.group("half"))):
            return None
        return f"time {m.group(0)!r}"
    if kind == "count":
        name, sizes = _count_sizes(m, known) or ("", [])
        if as_number(m.group("n")) in sizes:
            return None
        has = " or ".join(map(str, sorted(set(sizes))))
        return f"count {m.group('n') + ' ' + name!r} (the state has {has})"
    number = as_number(m.group("num").replace(",", ""))
    if (
        number is None
        or number in known.numbers
        or number in known.sizes
        or (number.is_integer() and f'"{number:.0f}-' in known.json)
    ):
        return None
    return f"{'amount' if m.group('cur') else 'number'} {m.group(0).strip()!r}"


def _said_by_user(value: str, users: str) -> bool:
    """True when the user wrote the value (the assistant may repeat what it was told)."""
    at = users.find(value)
    while at != -1:
        after = at + len(value)
        if not (at and users[at - 1].isdigit()) and not (after < len(users) and users[after].isdigit()):
            return True
        at = users.find(value, after)
    return False


def _masked(text: str, facts: Facts) -> str:
    """`text` with backticked names and the statements `consistency` judges blanked out (same length)."""
    spans = [m.span() for m in _CODE.finditer(text)] + judged_spans(text, facts)
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        while end < len(text) and not text[end].isspace() and text[end] not in ",;":
            end += 1  # a statement cut at consistency's 60 characters: blank the rest of its word too
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where each sentence of `text` starts and ends (as `sentences` splits it)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _found(kind: str, m: re.Match[str], known: Known) -> tuple[str, str | None] | None:
    """(the value as the user would have written it, what is wrong or None); None when it is no value."""
    if kind == "count":
        if m.group("words").split()[0].casefold() in MONTHS or _count_sizes(m, known) is None:
            return None  # not the size of a list field: the amount pattern reads the number
        return m.group("n"), _grounded(kind, m, known)
    value = m.group("num") if kind == "amount" else m.group(0).strip()
    return value, _grounded(kind, m, known)


def _candidates(text: str, masked: str, keys: frozenset[str]) -> list[tuple[int, int]]:
    """Spans of the sentences that hold a number and speak from the state, and do not quote or deny it."""
    out = []
    for start, end in _sentence_spans(text):
        if not _has_number(masked[start:end].lower()):
            continue
        sentence = text[start:end]
        low = sentence.lower()
        if not ("`" in sentence or _FROM_STATE.search(low) or _speaks_of_field(low, keys)):
            continue
        if not (_QUOTING.search(low) or has_cue(sentence, "absence")):
            out.append((start, end))  # a guess beside "the state doesn't have it" is the absent rule's
    return out


def invented_values(
    text: str, masked: str, facts: Facts, known: Known, spans: list[tuple[int, int]]
) -> list[str]:
    """Numbers, amounts, dates, times and counts the turn presents as from the state but the state lacks,
    in the sentences at `spans`."""
    out: list[str] = []
    users = " ".join(facts.users)
    for start, end in spans:
        for clause in _CLAUSE_END.split(masked[start:end]):
            if (
                not _has_number(clause.lower())
                or has_cue(clause, "negation")
                or has_cue(clause, "conditions")
            ):
                continue
            taken: set[int] = set()
            for kind, pattern in _KINDS.items():
                for m in pattern.finditer(clause):
                    span = set(range(*(m.span("n") if kind == "count" else m.span())))
                    if span & taken:
                        continue
                    found = _found(kind, m, known)
                    if found is None:
                        continue
                    taken |= span
                    value, problem = found
                    if problem and problem not in out and not _said_by_user(value, users):
                        out.append(problem)
    return out


def _keys(facts: Facts) -> frozenset[str]:
    """`_key_words` for the key names of the state outside lists."""
    return _key_words(tuple(facts.key_paths))


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report cited fields the state lacks and stated values that are not the state's."""
    facts = facts if facts is not None else Facts(messages, task, state)
    out: list[Violation] = []
    known: Known | None = None
    keys: Any = _UNSET
    for turn, text in enumerate(facts.assistant, start=1):
        text = plain(text)
        if "`" in text:
            for path in _missing_paths(text, facts):
                out.append(
                    violation(RULE, f"assistant turn {turn} cites `{path}`, which is not in the state")
                )
        if not _has_number(text.lower()):
            continue
        if keys is _UNSET:
            keys = _keys(facts)
        masked = _masked(text, facts)  # what is left once cited names and consistency's statements go
        if masked is not text and not _has_number(masked.lower()):
            continue
        spans = _candidates(text, masked, keys)
        if not spans:
            continue
        known = known if known is not None else Known(facts)
        for problem in invented_values(text, masked, facts, known, spans):
            out.append(
                violation(
                    RULE,
                    f"assistant turn {turn} gives the {problem} as from its state, but the state lacks it",
                )
            )
    return out
