"""Dialogue text for duplicate detection: normalisation, word shingles, the exact key."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

# Anything that is neither a word character nor whitespace; replaced by a space, so "`user.name`"
# and "user name" read the same and punctuation-only edits never make a dialogue look new.
_PUNCT = re.compile(r"[^\w\s]+")


def dialogue_text(messages: Iterable[Mapping[str, str]]) -> str:
    """The user/assistant turns of a dialogue as one text, one "role: content" line each.

    System messages are left out: they carry the STATE block, which differs for every sample and
    would make every dialogue look new.
    """
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages if m.get("role") != "system")


def tokens(text: str) -> list[bytes]:
    """The normalised words of a text: lowercased, punctuation stripped, UTF-8 encoded."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(words).encode().split(b" ") if words else []


def shingles(words: list[bytes], n: int) -> list[bytes]:
    """The word n-grams of a token list; a text shorter than n words is one shingle of all of it."""
    if len(words) <= n:
        return [b" ".join(words)]
    return list(map(b" ".join, zip(*(words[i:] for i in range(n)), strict=False)))


def exact_key(words: list[bytes]) -> int:
    """A 64-bit hash of the normalised text: the same for texts that differ only in case or punctuation."""
    return int.from_bytes(hashlib.blake2b(b" ".join(words), digest_size=8).digest(), "little")
