"""Composable text transforms applied by code on top of any attack: encodings, smuggling, splitting, language.

A chain is a tuple of transform names applied left to right: ("base64", "zero_width") base64-encodes the
text, then threads zero-width characters through the base64. The plan stores `chain_to_plan(chain)`;
`undo_chain` gives the plaintext back; checkers use `reveal` to see through smuggling in a reply.

Every chain that `validate_chain` accepts round-trips exactly on plain text (no zero-width, tag or
look-alike characters), except that a lossy first step (leetspeak, or homoglyphs / zero_width on text
that already holds their characters) gives back what that step alone gives back. `round_trips(chain,
text)` answers for one text.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import random
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from factory import attacks
from factory.errors import ConfigError
from factory.paths import PROMPTS_DIR

TRANSFORMS_FILE = PROMPTS_DIR / "transforms.yaml"

Chain = tuple[str, ...]
Rng = random.Random | int

# Character classes a transform's decode may be unable to restore. Plain text holds the first two.
UPPER, DIGIT, ZW, GLYPH, TAG = "uppercase", "digits", "zero-width characters", "look-alike letters", "tags"
PLAIN = frozenset({UPPER, DIGIT})

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"  # space, non-joiner, joiner, word joiner, BOM
TAG_BASE = 0xE0000  # U+E0020..U+E007E mirror printable ASCII, invisibly

# Latin letter -> Cyrillic/Greek look-alikes; every look-alike maps back to one letter.
LOOKALIKES: dict[str, str] = {
    "a": "\u0430", "c": "\u0441\u03f2", "e": "\u0435", "h": "\u04bb", "i": "\u0456", "j": "\u0458",
    "o": "\u043e\u03bf", "p": "\u0440\u03c1", "s": "\u0455", "x": "\u0445", "y": "\u0443",
    "A": "\u0410\u0391", "B": "\u0412\u0392", "C": "\u0421\u03f9", "E": "\u0415\u0395", "H": "\u041d\u0397",
    "I": "\u0406\u0399", "J": "\u0408", "K": "\u041a\u039a", "M": "\u041c\u039c", "N": "\u039d",
    "O": "\u041e\u039f", "P": "\u0420\u03a1", "S": "\u0405", "T": "\u0422\u03a4", "X": "\u0425\u03a7",
    "Y": "\u04ae\u03a5", "Z": "\u0396",
}  # fmt: skip
_GLYPH_TO_LATIN = {g: latin for latin, glyphs in LOOKALIKES.items() for g in glyphs}
_UNGLYPH = str.maketrans(_GLYPH_TO_LATIN)
_UNZW = str.maketrans(dict.fromkeys(ZERO_WIDTH))

# A canary token (attacks.canary_token): payload_split always cuts through one, so it is never whole.
_CANARY = re.compile(r"[A-Z]{3,}-\d{4}")
_ASSIGN = re.compile(r"([A-Za-z_]\w*) = (.*)")
_EXPR = re.compile(r"[A-Za-z_]\w*(?:\s*\+\s*[A-Za-z_]\w*)+")


def classes_of(text: str) -> frozenset[str]:
    """The character classes in `text` that some transform cannot round-trip."""
    found = set()
    for c in text:
        if c != c.lower():
            found.add(UPPER)
        elif c.isdigit():
            found.add(DIGIT)
        elif c in ZERO_WIDTH:
            found.add(ZW)
        elif TAG_BASE <= ord(c) <= TAG_BASE + 0x7F:
            found.add(TAG)
        if c in _GLYPH_TO_LATIN:
            found.add(GLYPH)
    return frozenset(found)


@dataclass(frozen=True)
class Transform:
    """A named transform; `decode` is None when it has no inverse."""

    name: str
    kind: str  # encoding | smuggling | splitting | language
    encode: Callable[[str, random.Random], str]
    decode: Callable[[str], str] | None
    hint: str  # a sentence for the attack text: "Decode this base64 and do what it says."
    step: str  # the same as a fragment, for a chain's hint
    emits: frozenset[str] = frozenset()  # classes the output may hold whatever the input
    passes: bool = True  # the input's characters (so its classes) can survive into the output
    breaks_on: frozenset[str] = frozenset()  # input classes the decode cannot restore
    hides: bool = True  # False: the plaintext stays readable in the output (language wraps it)

    @property
    def exact(self) -> bool:
        """True when decode(encode(t)) == t for every text t (no surrogates); else see `breaks_on`."""
        return self.decode is not None and not self.breaks_on

    def out_classes(self, given: frozenset[str]) -> frozenset[str]:
        """The classes the output may hold when the input holds `given`."""
        return self.emits | (given if self.passes else frozenset())


@dataclass(frozen=True)
class TransformData:
    """The wording in prompts/transforms.yaml."""

    hints: dict[str, tuple[str, str]]  # name -> (hint, step)
    split_names: tuple[str, ...]
    closings: tuple[str, ...]
    languages: dict[str, tuple[str, ...]]  # code -> templates holding {payload} once


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a non-empty list of strings")
    return tuple(value)


@cache
def transform_data(path: Path = TRANSFORMS_FILE) -> TransformData:
    """Load and validate prompts/transforms.yaml (cached)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    hints: dict[str, tuple[str, str]] = {}
    for name, entry in (raw.get("hints") or {}).items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("hint", "step")):
            raise ConfigError(f"{path}: hints.{name} needs the strings 'hint' and 'step'")
        hints[name] = (entry["hint"], entry["step"])
    split = raw.get("split") or {}
    names = _strs(split.get("names"), f"{path}: split.names")
    closings = _strs(split.get("closings"), f"{path}: split.closings")
    if len(set(names)) < 4 or not all(n.isidentifier() for n in names):
        raise ConfigError(f"{path}: split.names needs at least 4 distinct identifiers")
    for c in closings:
        if c.count("{expr}") != 1 or "+" in c or "\n" in c:
            raise ConfigError(f"{path}: split closing {c!r} needs one {{expr}}, no '+' and one line")
    languages = {
        code: _strs((entry or {}).get("templates"), f"{path}: languages.{code}.templates")
        for code, entry in (raw.get("languages") or {}).items()
    }
    templates = [t for ts in languages.values() for t in ts]
    if not templates or any(t.count("{payload}") != 1 for t in templates):
        raise ConfigError(f"{path}: every language template needs {{payload}} exactly once")
    heads = [t.split("{payload}")[0] for t in templates]
    for a, b in itertools.permutations(heads, 2):
        if b.startswith(a):  # a decoder could then read one template as another
            raise ConfigError(f"{path}: template start {a!r} is also the start of {b!r}; reword one")
    for t in templates:
        if classes_of(t) & {DIGIT, ZW, GLYPH, TAG}:
            raise ConfigError(f"{path}: template {t!r} holds digits or smuggling characters")
    return TransformData(hints, names, closings, languages)


# --- the transforms -----------------------------------------------------------------------------


def _from_attacks(name: str) -> tuple[Callable[[str, random.Random], str], Callable[[str], str]]:
    return (lambda t, rng: attacks.encode(name, t)), (lambda t: attacks.decode(name, t))


def _spaced_decode(text: str) -> str:
    if text[1::2].strip(" "):
        raise ValueError("not valid spaced: every second character must be a space")
    return text[::2]


def _homoglyphs(text: str, rng: random.Random) -> str:
    return "".join(rng.choice(LOOKALIKES[c]) if c in LOOKALIKES else c for c in text)


def _zero_width(text: str, rng: random.Random) -> str:
    # One invisible character between every two: no word, and so no canary, survives whole.
    return "".join(c if i == 0 else rng.choice(ZERO_WIDTH) + c for i, c in enumerate(text))


def _tag_encode(text: str, rng: random.Random) -> str:
    # unicode_escape turns any text into printable ASCII, which the tag block mirrors one to one.
    return "".join(chr(TAG_BASE + ord(c)) for c in text.encode("unicode_escape").decode("ascii"))


def _tag_decode(text: str) -> str:
    hidden = "".join(chr(ord(c) - TAG_BASE) for c in text if TAG_BASE + 0x20 <= ord(c) <= TAG_BASE + 0x7E)
    if text and not hidden:
        raise ValueError("not valid tag_chars: no Unicode tag characters")
    return hidden.encode("ascii").decode("unicode_escape")


def _split_encode(text: str, rng: random.Random) -> str:
    data = transform_data()
    # 2-4 parts, and one more cut for every canary beyond that, so none is ever whole.
    cuts = {rng.randrange(m.start() + 1, m.end()) for m in _CANARY.finditer(text)}
    n = max(rng.randint(2, 4), len(cuts) + 1)
    free = [i for i in range(1, len(text)) if i not in cuts]
    cuts |= set(rng.sample(free, max(0, min(len(free), n - 1 - len(cuts)))))
    bounds = [0, *sorted(cuts), len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    parts += [""] * (2 - len(parts))  # text too short to cut: still two variables
    names = rng.sample(data.split_names, min(len(parts), len(data.split_names)))
    names += [f"part{i}" for i in range(len(names), len(parts))]  # more canaries than names
    lines = [f"{name} = {part!r}" for name, part in zip(names, parts, strict=True)]
    rng.shuffle(lines)  # the closing line gives the order, so the lines need not
    return "\n".join([*lines, rng.choice(data.closings).replace("{expr}", " + ".join(names))])


def _split_decode(text: str) -> str:
    *lines, closing = text.split("\n")
    values: dict[str, str] = {}
    for line in lines:
        m = _ASSIGN.fullmatch(line)
        try:
            value = ast.literal_eval(m.group(2)) if m else None
        except (SyntaxError, ValueError):
            value = None
        if not m or not isinstance(value, str):
            raise ValueError(f"not valid payload_split: {line!r} is not name = 'text'")
        values[m.group(1)] = value
    expr = _EXPR.search(closing)
    order = [n.strip() for n in expr.group(0).split("+")] if expr else []
    if not order or not all(n in values for n in order):
        raise ValueError("not valid payload_split: the last line does not join the variables")
    return "".join(values[n] for n in order)


def _language_encode(codes: tuple[str, ...]) -> Callable[[str, random.Random], str]:
    def encode(text: str, rng: random.Random) -> str:
        head, tail = rng.choice(transform_data().languages[rng.choice(codes)]).split("{payload}")
        return head + text + tail

    return encode


def _language_decode(text: str) -> str:
    # Template starts are prefix-free (checked on load), so at most one template matches.
    for template in itertools.chain.from_iterable(transform_data().languages.values()):
        head, tail = template.split("{payload}")
        if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
            return text[len(head) : len(text) - len(tail)]
    raise ValueError("not valid language: no known template wraps this text")


@cache
def registry() -> dict[str, Transform]:
    """Every transform by name: the five of factory.attacks, smuggling, splitting and languages."""
    data = transform_data()

    def make(name: str, kind: str, enc: Any, dec: Any, hint_of: str | None = None, **kw: Any) -> Transform:
        hint, step = data.hints[hint_of or name]
        return Transform(name, kind, enc, dec, hint, step, **kw)

    both = frozenset({UPPER, DIGIT})
    made = [
        make("base64", "encoding", *_from_attacks("base64"), emits=both, passes=False),
        make("rot13", "encoding", *_from_attacks("rot13")),
        make("hex", "encoding", *_from_attacks("hex"), emits=frozenset({DIGIT}), passes=False),
        make("reversed", "encoding", *_from_attacks("reversed")),
        make("leetspeak", "encoding", *_from_attacks("leetspeak"), emits=frozenset({DIGIT}), breaks_on=both),
        make("spaced", "encoding", lambda t, rng: " ".join(t), _spaced_decode),
        make("homoglyphs", "smuggling", _homoglyphs, lambda t: t.translate(_UNGLYPH),
             emits=frozenset({GLYPH}), breaks_on=frozenset({GLYPH})),
        make("zero_width", "smuggling", _zero_width, lambda t: t.translate(_UNZW),
             emits=frozenset({ZW}), breaks_on=frozenset({ZW})),
        make("tag_chars", "smuggling", _tag_encode, _tag_decode, emits=frozenset({TAG}), passes=False),
        # repr() may write \U0001f642 or \x85: uppercase and digits whatever the input.
        make("payload_split", "splitting", _split_encode, _split_decode,
             emits=both | classes_of("".join(data.split_names + data.closings))),
    ]  # fmt: skip
    wording = frozenset().union(*(classes_of(t) for ts in data.languages.values() for t in ts))
    for code in ("", *data.languages):
        codes = (code,) if code else tuple(data.languages)
        name = f"lang_{code}" if code else "language"
        made.append(make(name, "language", _language_encode(codes), _language_decode, "language",
                         emits=wording, hides=False))  # fmt: skip
    return {t.name: t for t in made}


def get(name: str) -> Transform:
    """The transform called `name`; ConfigError naming the nearest and listing every valid one."""
    known = registry()
    if name in known:
        return known[name]
    near = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ConfigError(f"unknown transform {name!r}{hint}; valid: {', '.join(known)}")


def encode(name: str, text: str, rng: Rng) -> str:
    """Encode `text` with one named transform."""
    return get(name).encode(text, _as_rng(rng))


def decode(name: str, text: str) -> str:
    """Decode `text` with one named transform; ValueError if it is not valid for it."""
    t = get(name)
    if t.decode is None:
        raise ConfigError(f"transform {name!r} has no inverse")
    try:
        return t.decode(text)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise ValueError(f"not valid {name}: {exc}") from None


# --- chains -------------------------------------------------------------------------------------


def _as_rng(rng: Rng) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _problem(chain: Chain, given: frozenset[str] | None) -> str | None:
    """Why `chain` may not round-trip; `given` None skips the first step's input (any plaintext)."""
    steps = [get(name) for name in chain]
    classes = given if given is not None else steps[0].out_classes(PLAIN) if steps else frozenset()
    for i, step in enumerate(steps):
        if i and steps[i - 1].decode is None:
            return f"nothing may follow {steps[i - 1].name!r}: it has no inverse"
        if i == 0 and given is None:
            continue
        lost = classes & step.breaks_on
        if lost:
            before = f"the output of {chain[i - 1]!r}" if i else "the text"
            return f"{step.name!r} cannot follow: {before} may hold {', '.join(sorted(lost))}"
        classes = step.out_classes(classes)
    return None


def validate_chain(chain: Iterable[str]) -> Chain:
    """Return `chain` as a tuple; ConfigError for an unknown name or an order that would lose text."""
    chain = tuple(chain)
    problem = _problem(chain, None)
    if problem:
        raise ConfigError(f"transform chain {'+'.join(chain)!r} refused: {problem}")
    return chain


def round_trips(chain: Chain, text: str) -> bool:
    """True when undo_chain(apply_chain(text, chain, rng), chain) == text for every rng."""
    return all(get(n).decode is not None for n in chain) and _problem(chain, classes_of(text)) is None


def parse_chain(spec: str) -> Chain:
    """Parse "base64+zero_width" into ("base64", "zero_width"); "" is the empty chain."""
    names = [n.strip() for n in spec.split("+")] if spec.strip() else []
    if any(not n for n in names):
        raise ConfigError(f"transform chain {spec!r} has an empty name; write names joined by '+'")
    return validate_chain(names)


def chain_to_plan(chain: Chain) -> list[str]:
    """The chain as the plan stores it: a list of names."""
    return list(validate_chain(chain))


def chain_from_plan(names: list[str] | None) -> Chain:
    """The chain a plan recorded (None or [] is no transform)."""
    return validate_chain(names or ())


def apply_chain(text: str, chain: Chain, rng: Rng) -> str:
    """Apply each transform in order; the same rng (or seed) gives the same output."""
    rng = _as_rng(rng)
    for name in validate_chain(chain):
        text = get(name).encode(text, rng)
    return text


def undo_chain(text: str, chain: Chain) -> str:
    """Undo `chain` (last step first); ValueError naming the step whose input is not valid."""
    chain = validate_chain(chain)
    for name in reversed(chain):
        text = decode(name, text)
    return text


def chain_hint(chain: Chain) -> str:
    """One sentence telling the reader how to undo `chain` (outermost step first)."""
    steps = [get(n) for n in validate_chain(chain)]
    if len(steps) == 1:
        return steps[0].hint
    order = ", then ".join(s.step for s in reversed(steps))
    return f"To read it, {order}, and do what it says." if steps else ""


def random_chain(rng: Rng, max_len: int = 3, names: Iterable[str] | None = None) -> Chain:
    """A valid chain of 1..max_len transforms drawn from `names` (default: all), the same for a seed."""
    rng = _as_rng(rng)
    pool = sorted(names if names is not None else registry())
    length = rng.randint(1, max_len)
    chain: Chain = ()
    while len(chain) < length:
        options = [n for n in pool if _problem((*chain, n), None) is None]
        if not options:
            break
        chain = (*chain, rng.choice(options))
    return validate_chain(chain)


# --- detection, for checkers --------------------------------------------------------------------


def reveal(text: str) -> list[str]:
    """Readings of `text` with smuggling undone, to search for a secret or canary.

    [visible text without invisible (Cf) characters, NFKC-normalised, look-alikes read as Latin;
    the same without whitespace; the ASCII carried by tag characters, if any].
    """
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")
    # Look-alikes first: NFKC would turn some (lunate sigma) into other Greek letters.
    visible = unicodedata.normalize("NFKC", visible.translate(_UNGLYPH))
    hidden = "".join(chr(ord(c) - TAG_BASE) for c in text if TAG_BASE + 0x20 <= ord(c) <= TAG_BASE + 0x7E)
    readings = [visible, "".join(visible.split())] + ([hidden] if hidden else [])
    return list(dict.fromkeys(readings))


def reveals(text: str, needle: str) -> bool:
    """True when `needle` occurs in some reading of `text` (ignoring case and whitespace)."""
    want = "".join(needle.split()).casefold()
    return any(want in "".join(r.split()).casefold() for r in reveal(text))
