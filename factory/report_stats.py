"""Streaming tallies for the run report: counts, token use, length histograms and distinct-n.

Everything here takes one record at a time, so a report over 100k records never holds the records,
only counters and the distinct n-gram hashes that distinct-n needs.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# Bucket lower edges; the last bucket is open-ended. Fixed edges keep runs comparable with each other.
ASSISTANT_CHAR_EDGES = (0, 100, 200, 400, 800, 1600, 3200)
DIALOGUE_CHAR_EDGES = (0, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)
USER_TURN_EDGES = (0, 1, 2, 3, 4, 5, 6)

# Record meta key -> report table; the world's name is stored as meta.template.
GROUPS = {"kind": "kind", "family": "family", "world": "template"}

WORD = re.compile(r"\w+")
DISTINCT_N = 3
COMPACT_MIN = 1 << 18  # n-gram hashes buffered before a dedup pass (2 MiB per n)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any] | None]:
    """Yield a file's records one line at a time; None for a line that is not valid JSON."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None  # a torn line from a writer that was killed; counted, not fatal


def words(text: str) -> list[str]:
    """Lowercased word tokens, the unit distinct-n counts."""
    return WORD.findall(text.lower())


def rate(part: float, whole: float, digits: int = 4) -> float | None:
    """part / whole rounded, or None when there is nothing to divide by."""
    return round(part / whole, digits) if whole else None


class Histogram:
    """Counts of values in fixed buckets, plus count, min, mean and max."""

    def __init__(self, edges: tuple[int, ...]):
        self.edges = edges
        self.counts = [0] * len(edges)
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, value: int) -> None:
        """Count one value."""
        self.counts[max(bisect_right(self.edges, value) - 1, 0)] += 1
        self.n += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def labels(self) -> list[str]:
        """Bucket names: "100-199", a single value when a bucket holds one, "3200+" for the last."""
        out = []
        for lo, hi in zip(self.edges, self.edges[1:], strict=False):
            out.append(str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
        return [*out, f"{self.edges[-1]}+"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: buckets in order with their counts, and summary numbers."""
        return {
            "buckets": [{"range": r, "count": c} for r, c in zip(self.labels(), self.counts, strict=True)],
            "count": self.n,
            "min": self.min,
            "mean": rate(self.total, self.n, 1),
            "max": self.max,
        }


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; sorting is far faster here than np.unique on int64 (numpy 2.x)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


class DistinctN:
    """Unique n-grams / total n-grams for n = 1..max_n; n-grams never cross a turn boundary.

    N-grams are kept as 64-bit hashes, appended to flat buffers and deduplicated in numpy batches:
    memory follows the distinct n-grams, not the total, and a collision among a few million
    n-grams is vanishingly unlikely.
    """

    def __init__(self, max_n: int = DISTINCT_N):
        self.max_n = max_n
        self.totals = [0] * max_n
        self._buffers = [array("q") for _ in range(max_n)]
        self._seen = [np.empty(0, dtype=np.int64) for _ in range(max_n)]

    def add(self, tokens: list[str]) -> None:
        """Count one turn's tokens."""
        for n in range(1, self.max_n + 1):
            if len(tokens) >= n:
                self.totals[n - 1] += len(tokens) - n + 1
                grams = tokens if n == 1 else zip(*(tokens[i:] for i in range(n)), strict=False)
                buffer = self._buffers[n - 1]
                buffer.extend(map(hash, grams))
                # Waiting until the buffer is as large as what is already kept makes each pass cost
                # no more than the entries it absorbs, so the whole tally stays O(n log n).
                if len(buffer) >= max(COMPACT_MIN, len(self._seen[n - 1])):
                    self._compact(n - 1)

    def _compact(self, i: int) -> None:
        if self._buffers[i]:
            batch = np.frombuffer(self._buffers[i], dtype=np.int64)
            self._seen[i] = _sorted_unique(np.concatenate([self._seen[i], batch]))
            self._buffers[i] = array("q")

    def unique(self) -> list[np.ndarray]:
        """The distinct n-gram hashes for each n, sorted."""
        for i in range(self.max_n):
            self._compact(i)
        return self._seen

    def to_dict(self) -> dict[str, Any]:
        """{"distinct-1": ratio, ..., "tokens": total words}."""
        return distinct_dict([len(seen) for seen in self.unique()], self.totals)


def distinct_dict(uniques: list[int], totals: list[int]) -> dict[str, Any]:
    """The JSON form of distinct-n: one ratio per n, and the number of words."""
    pairs = zip(uniques, totals, strict=True)
    out: dict[str, Any] = {f"distinct-{n}": rate(u, t) for n, (u, t) in enumerate(pairs, start=1)}
    out["tokens"] = totals[0]
    return out


def merge_distinct(parts: list[DistinctN], max_n: int = DISTINCT_N) -> dict[str, Any]:
    """Distinct-n over the union of several tallies (the whole run from its families)."""
    totals = [sum(p.totals[i] for p in parts) for i in range(max_n)]
    empty = np.empty(0, dtype=np.int64)
    uniques = [
        len(_sorted_unique(np.concatenate([empty, *(p.unique()[i] for p in parts)]))) for i in range(max_n)
    ]
    return distinct_dict(uniques, totals)


class RunTally:
    """Everything the report counts, fed one finished record at a time."""

    def __init__(self) -> None:
        self.counts = Counter[str]()
        self.groups: dict[str, dict[str, Counter[str]]] = {name: {} for name in GROUPS}
        self.reasons = Counter[str]()
        self.rules = Counter[str]()
        self.tokens = Counter[str]()
        self.unreadable = 0
        self.assistant_chars = Histogram(ASSISTANT_CHAR_EDGES)
        self.dialogue_chars = Histogram(DIALOGUE_CHAR_EDGES)
        self.user_turns = Histogram(USER_TURN_EDGES)
        self.distinct_by_family: dict[str, DistinctN] = {}

    def add(self, status: str, record: dict[str, Any] | None) -> None:
        """Count one record from accepted.jsonl (status "accepted") or rejected.jsonl ("rejected")."""
        if record is None:
            self.unreadable += 1
            return
        meta = record.get("meta") or {}
        self.counts[status] += 1
        for name, key in GROUPS.items():
            self.groups[name].setdefault(str(meta.get(key, "?")), Counter())[status] += 1
        usage = meta.get("usage") or {}
        self.tokens.update({k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens")})
        if status == "accepted":
            self._add_dialogue(record.get("messages") or [], str(meta.get("family", "?")))
            return
        reason = record.get("reason", "?")
        self.reasons[reason] += 1
        if reason == "checks":
            # A record counts once per rule it broke, however many times it broke it.
            self.rules.update({v.get("rule", "?") for v in meta.get("violations") or []})

    def _add_dialogue(self, messages: list[dict[str, Any]], family: str) -> None:
        family_distinct = self.distinct_by_family.setdefault(family, DistinctN())
        chars = user_turns = 0
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str):
                continue
            chars += len(content)
            role = message.get("role")
            user_turns += role == "user"
            if role == "assistant":
                self.assistant_chars.add(len(content))
                tokens = words(content)
                family_distinct.add(tokens)
        self.dialogue_chars.add(chars)
        self.user_turns.add(user_turns)

    def group_table(self, name: str) -> dict[str, dict[str, Any]]:
        """Accepted, rejected, total and acceptance rate for each kind, family or world."""
        table = {}
        for key, row in sorted(self.groups[name].items()):
            total = row["accepted"] + row["rejected"]
            table[key] = {
                "accepted": row["accepted"],
                "rejected": row["rejected"],
                "total": total,
                "acceptance": rate(row["accepted"], total),
            }
        return table
