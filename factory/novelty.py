"""Attack novelty: a near-duplicate index over the attack turns of adversarial records, across runs.

    screen = AttackScreen(output_dir, run_name, threshold)   # every earlier run's adversarial records
    runner = Runner(..., screen=screen)                     # a stale attack is rejected as it is written
    summary = screen.finish()                               # novelty.json

The attack of a record is its user turns (the attacker's words), with the task's canary tokens
masked (a canary is a per-task random nonce, so two attacks that differ only in it are the same
attack) and a chained payload decoded. Shingling and hashing are factory.dedup's, so the two
indexes agree on what "near" means. Signatures persist per run in <output>/.novelty/<run>.npz, a
cache rebuilt from accepted.jsonl whenever it is missing, torn, stale or made with other parameters.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from factory import transforms
from factory.dedup import Match
from factory.dedup._lsh import defer_scipy_integrate, lsh_params
from factory.dedup._persist import (
    RunSignatures,
    accepted_path,
    complete_size,
    reusable_from,
    run_names,
    write_signatures,
)
from factory.dedup._text import exact_key, shingles, tokens
from factory.errors import ConfigError
from factory.report_stats import iter_jsonl, rate
from factory.store import REJECTED, record_id

defer_scipy_integrate()  # before datasketch, as in factory.dedup
from datasketch import MinHash, MinHashLSH  # noqa: E402

NOVELTY_DIR = ".novelty"
NOVELTY_FILE = "novelty.json"
REASON = "stale_attack"
# Bump when the attack text, normalisation or hashing changes: stored signatures are then rebuilt.
SKETCH_VERSION = 2  # 2: a chained attack is compared by its decoded text
_MASK = "canary"  # what a masked canary reads as


def attack_text(record: dict[str, Any]) -> str | None:
    """The user turns of an adversarial record, canaries masked; None for any other kind of record."""
    meta = record.get("meta") or {}
    if meta.get("kind") != "adversarial":
        return None
    text = "\n".join(m["content"] for m in record["messages"] if m.get("role") == "user")
    target = (meta.get("plan") or {}).get("target") or {}
    if target.get("chain") and target.get("payload") and target["payload"] in text:
        text = text.replace(target["payload"], _decoded(target["payload"], target["chain"]))
    # Longest first, so a canary that contains another is masked whole.
    for canary in sorted(meta.get("canaries") or [], key=len, reverse=True):
        if canary:
            text = text.replace(canary, f" {_MASK} ")
    return text


def _decoded(payload: str, chain: list[str]) -> str:
    """A chained payload as its chain's names and the attack under it.

    The encoded text is one opaque run of characters to a word shingler, so two chained attacks
    would be compared by the shared hint alone; what they say is what makes them the same or not.
    """
    encoded = payload.partition("\n\n")[2]
    try:
        plain = transforms.undo_chain(encoded, tuple(chain))
    except (ValueError, ConfigError):
        plain = encoded  # a chain this version does not know, or a payload edited by hand
    return f"{' '.join(chain)}\n{plain}"


def novelty_path(output_dir: Path, run_name: str) -> Path:
    """Where a run's attack signature file lives."""
    return output_dir / NOVELTY_DIR / f"{run_name}.npz"


def _read_attacks(path: Path, start: int, end: int) -> Iterator[tuple[str, str]]:
    """(id, attack text) of each adversarial record between two line-boundary byte offsets."""
    if end <= start:
        return
    with path.open("rb") as fh:
        fh.seek(start)
        for line in fh.read(end - start).splitlines():
            try:
                record = orjson.loads(line)
                found = record_id(record), attack_text(record)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue  # a blank or foreign line: checking it is not this index's job
            if found[1] is not None:
                yield found[0], found[1]


class AttackIndex:
    """Finds attacks that repeat, or nearly repeat, one seen in this batch or in an earlier run.

    The parameters are NearDupIndex's (word 3-grams, 128 permutations, crc32 + affine32), so an
    attack and a dialogue are "near" by the same measure.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 3, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self._lsh = MinHashLSH(num_perm=num_perm, params=lsh_params(threshold, num_perm))
        self._mh = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32, scheme="affine32")
        self._sigs: list[np.ndarray] = []
        self._keys: list[int] = []
        self._ids: list[str] = []
        self._runs: list[str] = []
        self._by_key: dict[int, int] = {}  # exact key -> first row with it
        self.runs: Counter[str] = Counter()  # rows per run

    def __len__(self) -> int:
        return len(self._ids)

    def params(self) -> dict[str, object]:
        """What a stored signature depends on; the threshold is not among them."""
        return {
            "novelty_version": SKETCH_VERSION,
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "seed": self.seed,
        }

    def sketch(self, text: str) -> tuple[int, np.ndarray]:
        """The exact key and MinHash values of an attack text."""
        words = tokens(text)
        self._mh.clear()
        self._mh.update_batch(shingles(words, self.ngram))
        return exact_key(words), self._mh.hashvalues.copy()

    def find(self, key: int, sig: np.ndarray) -> Match | None:
        """The closest indexed attack at or above the threshold (the earliest on a tie), or None."""
        row = self._by_key.get(key)
        if row is not None:
            return Match(self._ids[row], self._runs[row], 1.0, True)
        self._mh.hashvalues = sig
        candidates = sorted(self._lsh.query(self._mh))
        if not candidates:
            return None
        # LSH only says "likely similar": keep a candidate whose estimated Jaccard reaches the threshold.
        agree = np.count_nonzero(np.stack([self._sigs[r] for r in candidates]) == sig, axis=1) / self.num_perm
        best = int(np.argmax(agree))
        if agree[best] < self.threshold:
            return None
        row = candidates[best]
        return Match(self._ids[row], self._runs[row], float(agree[best]), False)

    def add(self, record_id: str, key: int, sig: np.ndarray, run: str) -> None:
        """Index one attack of `run`."""
        row = len(self._ids)
        self._sigs.append(sig)
        self._keys.append(key)
        self._ids.append(record_id)
        self._runs.append(run)
        self._by_key.setdefault(key, row)
        self.runs[run] += 1
        self._mh.hashvalues = sig
        self._lsh.insert(row, self._mh, check_duplication=False)

    def load_runs(self, output_dir: Path, exclude: str | None = None) -> int:
        """Index the adversarial records of every run in output_dir but `exclude`; return rows added."""
        return sum(self.load_run(output_dir, name) for name in run_names(output_dir) if name != exclude)

    def load_run(self, output_dir: Path, name: str) -> int:
        """One run's rows: its signature file, then what accepted.jsonl gained since it was written."""
        accepted = accepted_path(output_dir, name)
        stored, start, end = reusable_from(novelty_path(output_dir, name), accepted, self.params())
        first = len(self)
        ids, keys, sigs = (stored.ids, stored.exact.tolist(), list(stored.sigs)) if stored else ([], [], [])
        for rid, text in _read_attacks(accepted, start, end):
            key, sig = self.sketch(text)
            ids.append(rid)
            keys.append(key)
            sigs.append(sig)
        for rid, key, sig in zip(ids, keys, sigs, strict=True):
            self.add(rid, key, sig, name)
        if stored is None or start < end:  # cache what was rebuilt so the next run reads it back
            self.save(output_dir, name, range(first, len(self)), end)
        return len(self) - first

    def save(self, output_dir: Path, name: str, rows: range, accepted_bytes: int) -> Path:
        """Store rows of the index as `name`'s signature file; return its path."""
        sigs = np.array([self._sigs[r] for r in rows], dtype=np.uint32).reshape(len(rows), self.num_perm)
        keys = np.array([self._keys[r] for r in rows], dtype=np.uint64)
        meta = {**self.params(), "accepted_bytes": accepted_bytes}
        path = novelty_path(output_dir, name)
        write_signatures(path, RunSignatures([self._ids[r] for r in rows], keys, sigs, meta))
        return path


def _rejection(record: dict[str, Any], match: Match, run_name: str, threshold: float) -> dict[str, Any]:
    """A rejected.jsonl record for a stale attack, naming the record it repeats."""
    where = "this batch" if match.run == run_name else f"run {match.run!r}"
    return {
        "id": record_id(record),
        "reason": REASON,
        "detail": f"attack repeats {match.id} of {where} (similarity {match.similarity:.2f} >= {threshold})",
        "meta": record["meta"],
        "messages": record["messages"],
        "repeats": {"id": match.id, "run": match.run, "similarity": round(match.similarity, 4)},
    }


class AttackScreen:
    """Screens a run's attacks as they are written: one that repeats an attack kept before it, in this
    run or an earlier one, is rejected as stale.

        screen = AttackScreen(output_dir, run_name, threshold)    # earlier runs, and this one's so far
        rejected = screen.find(record)                             # None: novel
        screen.add(record)                                         # once it is written as accepted
        summary = screen.finish()                                  # novelty.json and the signatures
    """

    def __init__(self, output_dir: Path, run_name: str, threshold: float):
        self.output_dir, self.name, self.threshold = output_dir, run_name, threshold
        self.index = AttackIndex(threshold)
        self.index.load_runs(output_dir, exclude=run_name)
        self.earlier = dict(self.index.runs)
        self.first = len(self.index)
        # A resumed run: what it accepted before was screened then; later attacks are judged against it.
        if accepted_path(output_dir, run_name).exists():
            self.index.load_run(output_dir, run_name)
        self._pending: dict[str, tuple[int, np.ndarray]] = {}

    def find(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The rejected.jsonl record when `record`'s attack repeats an indexed one; None when novel."""
        text = attack_text(record)
        if text is None:
            return None
        key, sig = self.index.sketch(text)
        match = self.index.find(key, sig)
        if match is not None:
            return _rejection(record, match, self.name, self.threshold)
        self._pending[record_id(record)] = (key, sig)
        return None

    def add(self, record: dict[str, Any]) -> None:
        """Index a novel attack once its record is kept (a later check may still reject the record)."""
        pending = self._pending.pop(record_id(record), None)
        if pending is not None:
            self.index.add(record_id(record), *pending, self.name)

    def drop(self, record: dict[str, Any]) -> None:
        """Forget a found-novel attack whose record was rejected for another reason."""
        self._pending.pop(record_id(record), None)

    def finish(self) -> dict[str, Any]:
        """Store this run's signatures, write novelty.json and return the novelty summary."""
        run_path = self.output_dir / self.name
        accepted = accepted_path(self.output_dir, self.name)
        rows = range(self.first, len(self.index))
        self.index.save(self.output_dir, self.name, rows, complete_size(accepted) if accepted.exists() else 0)
        summary = novelty_summary(run_path, self.earlier, self.threshold)
        (run_path / NOVELTY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        return summary


def _rates(novel: int, inside: int, across: int) -> dict[str, Any]:
    total = novel + inside + across
    return {
        "attacks": total,
        "novel": novel,
        "stale_inside": inside,
        "stale_across": across,
        "novelty_rate": rate(novel, total),
        "inside_rate": rate(inside, total),
        "across_rate": rate(across, total),
    }


def novelty_summary(run_path: Path, earlier: dict[str, int], threshold: float) -> dict[str, Any]:
    """Novelty of a screened run from its files: every attack it generated, novel or stale, by family."""
    name = run_path.name
    counts: dict[str, Counter[str]] = {}
    for record in iter_jsonl(accepted_path(run_path.parent, name)):
        if record is not None and record.get("meta", {}).get("kind") == "adversarial":
            counts.setdefault(record["meta"]["family"], Counter())["novel"] += 1
    for record in iter_jsonl(run_path / REJECTED):
        if record is not None and record.get("reason") == REASON:
            where = "inside" if record["repeats"]["run"] == name else "across"
            counts.setdefault(record["meta"]["family"], Counter())[where] += 1
    total = sum((c for c in counts.values()), Counter())
    return {
        "threshold": threshold,
        **_rates(total["novel"], total["inside"], total["across"]),
        "earlier": {"runs": len(earlier), "attacks": sum(earlier.values())},
        "by_family": {f: _rates(c["novel"], c["inside"], c["across"]) for f, c in sorted(counts.items())},
    }


def novelty_markdown(summary: dict[str, Any]) -> list[str]:
    """The report.md section for a novelty summary."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        "## Attack novelty",
        "",
        f"{summary['attacks']} attacks generated; {summary['novel']} novel ({pct(summary['novelty_rate'])}), "
        f"kept. Rejected as `{REASON}` (Jaccard >= {summary['threshold']} on the user turns, canaries "
        f"masked): {summary['stale_inside']} repeating this batch ({pct(summary['inside_rate'])}), "
        f"{summary['stale_across']} repeating an earlier run ({pct(summary['across_rate'])}; "
        f"{summary['earlier']['attacks']} attacks in {summary['earlier']['runs']} earlier runs).",
        "",
        "| family | attacks | novel | repeats this batch | repeats earlier runs | novelty |",
        "|---|---|---|---|---|---|",
    ]
    for family, f in summary["by_family"].items():
        lines.append(
            f"| {family} | {f['attacks']} | {f['novel']} | {f['stale_inside']} | {f['stale_across']} | "
            f"{pct(f['novelty_rate'])} |"
        )
    return lines
