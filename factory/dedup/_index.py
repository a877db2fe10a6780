"""NearDupIndex: an exact normalised-text layer, then MinHash + LSH over word n-grams, across runs."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factory.dedup._lsh import defer_scipy_integrate, lsh_params

defer_scipy_integrate()  # before datasketch: its top-level scipy import is 50 MB we never call into
from datasketch import MinHash, MinHashLSH  # noqa: E402

from factory.dedup._persist import (  # noqa: E402
    RunSignatures,
    accepted_path,
    complete_size,
    read_dialogues,
    reusable_from,
    run_names,
    signature_path,
    write_signatures,
)
from factory.dedup._text import exact_key, shingles, tokens  # noqa: E402

# Bump when normalisation, shingling or hashing changes: stored signatures are then rebuilt.
SKETCH_VERSION = 1
_SCHEME = "affine32"  # datasketch's default since 2.0; named so stored rows never change meaning
_FIRST_CAPACITY = 1024


def _band_key(band: bytes) -> bytes:
    """A 64-bit digest of one LSH band's hash values, the key datasketch stores for it."""
    return hashlib.blake2b(band, digest_size=8).digest()


@dataclass(frozen=True)
class Match:
    """What a dialogue repeats: the record's id, its run (None: the run being written), how closely."""

    id: str
    run: str | None
    similarity: float  # estimated Jaccard of the word n-gram sets; 1.0 for an exact repeat
    exact: bool  # equal after normalisation (case, whitespace, punctuation)


class NearDupIndex:
    """Finds dialogues that repeat, or nearly repeat, one already seen in this run or an earlier one.

    `ngram=3`: word 3-grams keep local word order, so templated dialogues that share vocabulary
    but not phrasing stay apart, while one substituted word costs only 3 of the text's shingles
    (a one-word edit stays above 0.85 from about 40 words on; shorter texts rely on the exact layer).
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, ngram: int = 3, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if ngram < 1:
            raise ValueError(f"ngram must be 1 or more, got {ngram}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        # Explicit bands: datasketch's own optimiser would import scipy (see factory.dedup._lsh).
        # Band keys hashed to 8 bytes instead of 4 x rows bytes: 12 % of the index's memory; a rare
        # collision only adds a candidate, which the Jaccard check below then turns down.
        self._lsh = MinHashLSH(num_perm=num_perm, params=lsh_params(threshold, num_perm), hashfunc=_band_key)
        # One reusable sketch: a new MinHash draws its permutations, which costs more than the hashing.
        # crc32 is C-fast and stable across processes; the scheme pre-mixes it with a Murmur finaliser.
        self._mh = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32, scheme=_SCHEME)
        self._sigs = np.empty((_FIRST_CAPACITY, num_perm), dtype=np.uint32)
        self._keys = np.empty(_FIRST_CAPACITY, dtype=np.uint64)
        self._ids: list[str] = []
        self._runs: list[str | None] = []  # per row: the earlier run it came from, None for this run
        self._by_key: dict[int, int] = {}  # exact key -> first row with it
        self._own: dict[str, int] = {}  # id -> row, for this run's rows
        self._loaded: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def params(self) -> dict[str, object]:
        """What a stored signature depends on; the threshold is not among them."""
        return {"version": SKETCH_VERSION, "num_perm": self.num_perm, "ngram": self.ngram, "seed": self.seed}

    # --- checking ---

    def find(self, text: str, record_id: str | None = None) -> Match | None:
        """The closest earlier dialogue at or above the threshold; `record_id`'s own row never counts."""
        words = tokens(text)
        return self._find(words, exact_key(words), record_id)[0]

    def query(self, text: str) -> str | None:
        """The id of the dialogue this text repeats or nearly repeats, or None; adds nothing."""
        match = self.find(text)
        return match.id if match else None

    def check_and_add(self, record_id: str, text: str) -> str | None:
        """The id this dialogue near-duplicates; or None, and the dialogue joins the index."""
        words = tokens(text)
        key = exact_key(words)
        match, sig = self._find(words, key, record_id)
        if match is not None:
            return match.id
        if record_id not in self._own:
            self._append(record_id, key, self._sketch(words) if sig is None else sig, None)
        return None

    def add(self, record_id: str, text: str) -> None:
        """Index a dialogue of the run being written without checking it (once per id)."""
        if record_id in self._own:
            return
        words = tokens(text)
        self._append(record_id, exact_key(words), self._sketch(words), None)

    def similarity(self, text_a: str, text_b: str) -> float:
        """Estimated Jaccard similarity of two texts' word n-gram sets, as the index sees them."""
        a = self._sketch(tokens(text_a)).copy()
        return float(np.count_nonzero(a == self._sketch(tokens(text_b))) / self.num_perm)

    # --- persistence ---

    def load_runs(self, output_dir: Path | str, exclude: str | None = None) -> int:
        """Index every run in output_dir except `exclude` (the run being written); return rows added."""
        added = 0
        for name in run_names(Path(output_dir)):
            if name != exclude and name not in self._loaded:
                added += self._load(Path(output_dir), name, name)
        return added

    def resume(self, output_dir: Path | str, run_name: str) -> int:
        """Index the run being written, as it stands on disk (before its first check); return rows added."""
        if self._own:
            raise ValueError("resume() must come before this run's first check_and_add()")
        return self._load(Path(output_dir), run_name, None)

    @classmethod
    def for_run(
        cls, output_dir: Path | str, run_name: str, threshold: float = 0.85, **params: int
    ) -> NearDupIndex:
        """An index holding every earlier run in output_dir and what `run_name` already accepted."""
        index = cls(threshold, **params)
        index.load_runs(output_dir, exclude=run_name)
        index.resume(output_dir, run_name)
        return index

    def save_run(self, output_dir: Path | str, run_name: str) -> Path:
        """Store this run's rows (resumed ones included) as `run_name`'s signature file; return its path."""
        output_dir = Path(output_dir)
        rows = np.fromiter(self._own.values(), dtype=np.int64, count=len(self._own))
        end = complete_size(accepted_path(output_dir, run_name))
        path = signature_path(output_dir, run_name)
        write_signatures(path, self._stored(rows, end))
        return path

    def _load(self, output_dir: Path, name: str, tag: str | None) -> int:
        """Add one run's rows: its signature file, then what accepted.jsonl gained since it was written."""
        accepted = accepted_path(output_dir, name)
        stored, start, end = reusable_from(signature_path(output_dir, name), accepted, self.params())
        first = len(self)
        seen: set[str] = set()
        if stored is not None:
            for record_id, key, sig in zip(stored.ids, stored.exact.tolist(), stored.sigs, strict=True):
                if record_id not in seen:
                    seen.add(record_id)
                    self._append(record_id, key, sig, tag)
        for record_id, text in read_dialogues(accepted, start, end):
            if record_id not in seen:
                seen.add(record_id)
                words = tokens(text)
                self._append(record_id, exact_key(words), self._sketch(words), tag)
        if tag is not None:
            self._loaded.add(tag)
        if stored is None or start < end:  # cache what was rebuilt so the next run reads it back
            rows = np.arange(first, len(self), dtype=np.int64)
            write_signatures(signature_path(output_dir, name), self._stored(rows, end))
        return len(self) - first

    def _stored(self, rows: np.ndarray, accepted_bytes: int) -> RunSignatures:
        meta = {**self.params(), "accepted_bytes": accepted_bytes}
        return RunSignatures([self._ids[r] for r in rows], self._keys[rows], self._sigs[rows], meta)

    # --- internals ---

    def _find(
        self, words: list[bytes], key: int, record_id: str | None
    ) -> tuple[Match | None, np.ndarray | None]:
        """The best match and the text's MinHash values (computed only when the exact layer misses)."""
        skip = self._own.get(record_id) if record_id is not None else None
        row = self._by_key.get(key)
        if row is not None and row != skip:
            return Match(self._ids[row], self._runs[row], 1.0, True), None
        sig = self._sketch(words)
        candidates = self._lsh.query(self._mh)
        if skip is not None and skip in candidates:
            candidates.remove(skip)
        if not candidates:
            return None, sig
        rows = np.sort(np.fromiter(candidates, dtype=np.int64, count=len(candidates)))
        # LSH only says "likely similar": keep a candidate whose estimated Jaccard reaches the threshold.
        agree = np.count_nonzero(self._sigs[rows] == sig, axis=1) / self.num_perm
        best = int(np.argmax(agree))  # the earliest row on a tie
        if agree[best] < self.threshold:
            return None, sig
        row = int(rows[best])
        return Match(self._ids[row], self._runs[row], float(agree[best]), False), sig

    def _sketch(self, words: list[bytes]) -> np.ndarray:
        """The MinHash values of a token list; the reusable sketch holds them until the next call."""
        self._mh.clear()
        self._mh.update_batch(shingles(words, self.ngram))
        return self._mh.hashvalues

    def _append(self, record_id: str, key: int, sig: np.ndarray, run: str | None) -> None:
        row = len(self._ids)
        if row == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
            self._keys = np.concatenate([self._keys, np.empty_like(self._keys)])
        self._sigs[row] = sig
        self._keys[row] = key
        self._ids.append(record_id)
        self._runs.append(run)
        self._by_key.setdefault(key, row)
        if run is None:
            self._own[record_id] = row
        # The LSH stores band hashes, not the sketch, so the reusable MinHash can carry any row in.
        self._mh.hashvalues = self._sigs[row]
        self._lsh.insert(row, self._mh, check_duplication=False)
