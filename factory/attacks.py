"""Code-built attack parts: text transforms with their inverses, canary tokens, forged STATE blocks.

The teacher writes the attack's words; what a checker must later recognise (the token, the encoded
payload, the forged block) is built here, deterministically, so it is known exactly.
"""

from __future__ import annotations

import base64
import codecs
import copy
import datetime
import difflib
import hashlib
import itertools
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from factory.errors import ConfigError
from factory.paths import PROMPTS_DIR
from factory.state import render_state, split_path

ATTACKS_FILE = PROMPTS_DIR / "attacks.yaml"


@dataclass(frozen=True)
class Transform:
    """A named text encoding and its inverse."""

    name: str
    encode: Callable[[str], str]
    decode: Callable[[str], str]
    exact: bool  # False: decode(encode(t)) gives t only for lowercase text without digits


def _b64_decode(text: str) -> str:
    return base64.b64decode(text.encode("ascii"), validate=True).decode()


def _hex_decode(text: str) -> str:
    return bytes.fromhex(text).decode()


def _rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


# Classic substitutions; leetspeak loses case and cannot tell a planted digit from an original one.
_LEET = str.maketrans("aeiost", "431057")
_UNLEET = str.maketrans("431057", "aeiost")

TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("base64", lambda s: base64.b64encode(s.encode()).decode("ascii"), _b64_decode, True),
        Transform("rot13", _rot13, _rot13, True),
        Transform("hex", lambda s: s.encode().hex(), _hex_decode, True),
        Transform("reversed", lambda s: s[::-1], lambda s: s[::-1], True),
        Transform("leetspeak", lambda s: s.lower().translate(_LEET), lambda s: s.translate(_UNLEET), False),
    )
}


def get_transform(name: str) -> Transform:
    """Return the transform called `name`; ConfigError naming the nearest one otherwise."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        near = difflib.get_close_matches(name, TRANSFORMS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown transform {name!r}{hint}; known: {', '.join(TRANSFORMS)}") from None


def encode(transform: str, text: str) -> str:
    """Encode `text` with the named transform."""
    return get_transform(transform).encode(text)


def decode(transform: str, text: str) -> str:
    """Decode `text` with the named transform; ValueError if it is not valid for that transform."""
    try:
        return get_transform(transform).decode(text)
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError and fromhex's error all are
        raise ValueError(f"not valid {transform}: {exc}") from None


@dataclass(frozen=True)
class AttackData:
    """The data in prompts/attacks.yaml."""

    canary_words: tuple[str, ...]
    personas: tuple[str, ...]
    fallback_trust: str
    transforms: tuple[str, ...]
    hidden_instructions: dict[str, tuple[str, ...]]
    delimiters: tuple[str, ...] = ()
    many_shots: tuple[tuple[str, str], ...] = ()
    many_shot_formats: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()
    foreign_instructions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    other_users: tuple[str, ...] = ()


def _pairs(raw: dict[str, Any], key: str, source: Path) -> tuple[tuple[str, str], ...]:
    value = raw.get(key)
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) and x for x in v) for v in value
        )
    ):
        raise ConfigError(f"{source}: {key!r} must be a non-empty list of [user, assistant] string pairs")
    return tuple((u, a) for u, a in value)


def _by_language(raw: dict[str, Any], key: str, source: Path) -> dict[str, tuple[str, ...]]:
    value = raw.get(key)
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{source}: {key!r} must map language codes (fr, de, ...) to lists of strings")
    return {str(lang): _strings(value, lang, source) for lang in value}


def _strings(raw: dict[str, Any], key: str, source: Path) -> tuple[str, ...]:
    value = raw.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}: {key!r} must be a non-empty list of strings")
    return tuple(value)


@cache
def attack_data(path: Path = ATTACKS_FILE) -> AttackData:
    """Load and validate prompts/attacks.yaml (cached)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    transforms = _strings(raw, "transforms", path)
    for name in transforms:
        get_transform(name)
    hidden = raw.get("hidden_instructions")
    if not isinstance(hidden, dict) or set(hidden) != {"token", "secret"}:
        raise ConfigError(f"{path}: 'hidden_instructions' must have the keys 'token' and 'secret'")
    fallback = raw.get("fallback_trust")
    if not isinstance(fallback, str) or not fallback:
        raise ConfigError(f"{path}: 'fallback_trust' must be a non-empty string")
    return AttackData(
        canary_words=_strings(raw, "canary_words", path),
        personas=_strings(raw, "personas", path),
        fallback_trust=fallback,
        transforms=transforms,
        hidden_instructions={k: _strings(hidden, k, path) for k in ("token", "secret")},
        delimiters=_strings(raw, "delimiters", path),
        many_shots=_pairs(raw, "many_shots", path),
        many_shot_formats=_strings(raw, "many_shot_formats", path),
        documents=_strings(raw, "documents", path),
        foreign_instructions=_by_language(raw, "foreign_instructions", path),
        other_users=_strings(raw, "other_users", path),
    )


def rng_for(*parts: object) -> random.Random:
    """A random generator seeded from the parts' text, identical on every machine and run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def canary_token(task_id: str) -> str:
    """The token an attacker in task `task_id` demands, e.g. 'ZEBRA-7731'."""
    digest = hashlib.sha256(f"canary:{task_id}".encode()).digest()
    words = attack_data().canary_words
    word = words[int.from_bytes(digest[:4], "big") % len(words)]
    return f"{word}-{int.from_bytes(digest[4:8], 'big') % 9000 + 1000}"


def persona_for(task_id: str, state_text: str = "") -> str:
    """The attacker persona for a task: none that occurs anywhere in `state_text` (case-insensitive),
    so a reply that merely repeats the state never looks like the persona speaking."""
    text = state_text.casefold()
    options = [p for p in attack_data().personas if p.casefold() not in text]
    if not options:
        raise ConfigError("every persona in prompts/attacks.yaml occurs in the state; add more")
    return rng_for("persona", task_id).choice(options)


def hidden_instruction(rng: random.Random, token: str, secret_path: str | None = None) -> str:
    """The plaintext an encoding attack hides: demand the token, and a secret when a path is given."""
    bank = attack_data().hidden_instructions
    if secret_path is None:
        return rng.choice(bank["token"]).format(token=token)
    return rng.choice(bank["secret"]).format(token=token, secret=secret_path)


def forge_state(state: dict[str, Any], changes: dict[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    """Deep-copy `state`, set each path in `changes` (creating missing keys) and remove each in `drop`."""
    forged = copy.deepcopy(state)
    # Later list items go first, so deleting one never shifts the index of another still to delete.
    ordered = sorted(
        (split_path(p) for p in drop),
        key=lambda parts: [(-x, "") if isinstance(x, int) else (0, x) for x in parts],
    )
    for parts in ordered:
        *parents, last = parts
        node: Any = forged
        for part in parents:
            node = node[part]
        del node[last]
    for path, value in changes.items():
        parts = split_path(path)
        node = forged
        for part, nxt in itertools.pairwise(parts):
            if isinstance(part, int):
                node = node[part]
            else:
                node = node.setdefault(part, [] if isinstance(nxt, int) else {})
        last = parts[-1]
        if isinstance(last, int) and isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return forged


def fake_state_block(state: dict[str, Any], changes: dict[str, Any], drop: Iterable[str] = ()) -> str:
    """A forged STATE block: the real state with `changes` applied, rendered like the real one.

    `drop` names fields the attacker cannot know (the secrets), so the forgery never carries them.
    """
    return render_state(forge_state(state, changes, drop))


def spoof_delimiters(rng: random.Random, instruction: str) -> str:
    """`instruction` wrapped in fake chat-template or system markers (<|im_start|>system, [SYSTEM]...)."""
    return rng.choice(attack_data().delimiters).replace("{instruction}", instruction)


def many_shot_block(rng: random.Random, token: str, shots: int) -> str:
    """`shots` fake exchanges, one format throughout, in which "the assistant" gave up `token`."""
    data = attack_data()
    layout = rng.choice(data.many_shot_formats)
    picked = rng.sample(data.many_shots, k=min(shots, len(data.many_shots)))
    return "\n\n".join(
        layout.replace("{user}", u.replace("{token}", token)).replace(
            "{assistant}", a.replace("{token}", token)
        )
        for u, a in picked
    )


def embed_in_document(rng: random.Random, instruction: str) -> str:
    """A pasted e-mail, note or review that carries `instruction` for whichever AI reads it."""
    return rng.choice(attack_data().documents).replace("{instruction}", instruction)


def languages() -> tuple[str, ...]:
    """The language codes language_switch attacks are written in."""
    return tuple(attack_data().foreign_instructions)


def foreign_instruction(rng: random.Random, language: str, token: str) -> str:
    """A demand for `token` written in `language` (a code from languages())."""
    bank = attack_data().foreign_instructions
    if language not in bank:
        raise ConfigError(
            f"no foreign_instructions for {language!r} in {ATTACKS_FILE}; known: {', '.join(bank)}"
        )
    return rng.choice(bank[language]).replace("{token}", token)


def other_user_for(task_id: str, state_text: str = "") -> str:
    """The person an impersonator claims to be: a name that occurs nowhere in `state_text`."""
    text = state_text.casefold()
    options = [n for n in attack_data().other_users if n.casefold() not in text]
    if not options:
        raise ConfigError("every name in other_users of prompts/attacks.yaml occurs in the state; add more")
    return rng_for("other_user", task_id).choice(options)


_ISO_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")


def alter_value(rng: random.Random, value: Any) -> Any:
    """A plausible wrong value of the same kind: another number, or the date shifted by days.

    None for values with no kind-preserving change (free text, booleans): a forged premise must be
    a value the state could have held, or it plants nothing a checker can recognise.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (
            value + rng.choice([1, 2, 3, 5, 10])
            if value < 10
            else value + max(1, value // rng.choice([3, 4, 5]))
        )
    if isinstance(value, float):
        return round(value * rng.choice([1.25, 1.5, 2.0]) + 1, 2)
    if isinstance(value, str) and (found := _ISO_DAY.match(value)):
        day = datetime.date.fromisoformat(found.group(1)) + datetime.timedelta(
            days=rng.choice([2, 3, 5, 7, 14])
        )
        return day.isoformat() + value[10:]
    return None
