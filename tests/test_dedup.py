"""Near-duplicate detection: exact and edited repeats are caught, distinct dialogues are not, across runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factory.dedup import DEDUP_DIR, NearDupIndex, dialogue_text, signature_path
from factory.dedup._text import shingles, tokens
from factory.defaults import DEFAULTS
from factory.models import Message
from factory.paths import SEEDS_DIR
from factory.plan import parse_mix, plan_tasks
from factory.seeds import load_worlds
from factory.state import render_state
from factory.store import RunWriter, open_run, read_jsonl
from factory.teachers.builtin import write_turns

Record = dict


@pytest.fixture(scope="module")
def records() -> list[Record]:
    """500 accepted-style records written by the built-in teacher, system message first."""
    tasks = plan_tasks(load_worlds(SEEDS_DIR), 500, 0, parse_mix(DEFAULTS["mix"]))
    return [
        {
            "messages": [{"role": "system", "content": render_state(t.state)}, *write_turns(t)],
            "meta": {"id": t.id, "family": t.family, "template": t.world},
        }
        for t in tasks
    ]


def text_of(record: Record) -> str:
    return dialogue_text(record["messages"])


def make_run(output: Path, name: str, recs: list[Record]) -> None:
    """Write records to a run's accepted.jsonl through the real run store, as `factory generate` does."""
    run = open_run(output / name, {"run": name})
    writer = RunWriter(run, flush_every=8)
    for record in recs:
        writer.write("accepted", record)
    writer.close()


def add_all(index: NearDupIndex, recs: list[Record]) -> None:
    for record in recs:
        assert index.check_and_add(record["meta"]["id"], text_of(record)) is None


def jaccard(a: str, b: str, n: int = 3) -> float:
    """The true Jaccard similarity of two texts' word n-gram sets."""
    sa, sb = set(shingles(tokens(a), n)), set(shingles(tokens(b), n))
    return len(sa & sb) / len(sa | sb)


def stored(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a signature file, the file closed again."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def numbered(words: int, changed: tuple[int, ...] = ()) -> str:
    """A text of distinct words; the positions in `changed` hold other distinct words."""
    return " ".join(f"changed{i}" if i in changed else f"word{i}" for i in range(words))


def test_dialogue_text_leaves_out_the_state_block(records: list[Record]):
    messages: list[Message] = records[0]["messages"]
    text = dialogue_text(messages)
    assert "== STATE ==" not in text
    assert text.startswith(f"user: {messages[1]['content']}")
    assert text.count("\n") == len(messages) - 2


def test_exact_repeat_is_caught_with_the_id_it_repeats(records: list[Record]):
    index = NearDupIndex()
    add_all(index, records[:50])
    original = records[7]
    # Case, spacing and punctuation do not make a dialogue new.
    repeat = "  " + text_of(original).upper().replace(".", " !").replace(" ", "   ")
    assert index.check_and_add("new-id", repeat) == original["meta"]["id"]
    match = index.find(repeat)
    assert match is not None and match.exact and match.similarity == 1.0 and match.run is None
    assert len(index) == 50  # the repeat was not added


def test_one_word_edit_in_a_long_dialogue_is_caught(records: list[Record]):
    index = NearDupIndex()
    add_all(index, records)
    longest = max(records, key=lambda r: len(text_of(r).split()))
    words = text_of(longest).split(" ")
    assert len(words) >= 100
    middle = len(words) // 2
    words[middle] = "zebra" if words[middle] != "zebra" else "yak"
    edited = " ".join(words)
    assert index.check_and_add("edited", edited) == longest["meta"]["id"]
    match = index.find(edited)
    assert match is not None and not match.exact and match.similarity >= 0.85


def test_builtin_dialogues_of_one_family_and_world_are_not_flagged(records: list[Record]):
    # 500 dialogues fall into ~115 (family, world) groups of up to ~15 alike dialogues each.
    index = NearDupIndex()
    flagged = []
    for record in records:
        dup = index.check_and_add(record["meta"]["id"], text_of(record))
        if dup is not None:
            flagged.append((record, dup))
    # Measured: 0 of these 500 at the default threshold (about 1.7% of 100k, bench/dedup.py).
    assert len(flagged) <= 5
    by_id = {r["meta"]["id"]: r for r in records}
    for record, dup in flagged:  # any hit must be a true textual repeat, not an LSH false positive
        assert jaccard(text_of(record), text_of(by_id[dup])) >= 0.75


def test_threshold_is_configurable():
    original, edited = numbered(100), numbered(100, changed=(20, 50, 80))
    assert jaccard(original, edited) == pytest.approx(89 / 107)  # each edit swaps 3 of 98 shingles
    for threshold, caught in ((0.7, True), (0.95, False)):
        index = NearDupIndex(threshold=threshold)
        index.check_and_add("original", original)
        assert index.query(edited) == ("original" if caught else None)
    assert NearDupIndex().similarity(original, edited) == pytest.approx(89 / 107, abs=0.1)
    with pytest.raises(ValueError, match="threshold"):
        NearDupIndex(threshold=0)


def test_a_match_is_reported_only_at_or_above_the_threshold():
    # LSH buckets also catch some pairs below the threshold; those must not be reported.
    index = NearDupIndex(threshold=0.7)
    original = numbered(200)
    index.check_and_add("original", original)
    reported = 0
    for k in range(1, 30):
        edited = numbered(200, changed=tuple(range(3, 200, 200 // k))[:k])
        match = index.find(edited)
        assert (match is not None) == (index.similarity(original, edited) >= 0.7), k
        reported += match is not None
    assert 5 <= reported < 29  # both outcomes are exercised


def test_query_adds_nothing_and_a_record_is_no_duplicate_of_itself(records: list[Record]):
    index = NearDupIndex()
    text = text_of(records[0])
    assert index.query(text) is None
    assert index.query(text) is None and len(index) == 0
    assert index.check_and_add("a", text) is None
    assert index.check_and_add("a", text) is None  # a re-checked record
    assert index.check_and_add("b", text) == "a"
    index.add("c", text_of(records[1]))  # indexed unchecked, as a runner that used find() would
    assert index.query(text_of(records[1])) == "c"
    assert len(index) == 2


def test_second_run_catches_a_repeat_of_the_first_run(tmp_path: Path, records: list[Record]):
    first = NearDupIndex()
    add_all(first, records[:100])
    make_run(tmp_path, "run1", records[:100])
    path = first.save_run(tmp_path, "run1")
    assert path == tmp_path / DEDUP_DIR / "run1.npz"

    second = NearDupIndex.for_run(tmp_path, "run2")
    assert len(second) == 100
    repeated = records[42]
    match = second.find(text_of(repeated))
    assert match is not None and match.id == repeated["meta"]["id"] and match.run == "run1"
    assert second.check_and_add("run2-task", text_of(repeated)) == repeated["meta"]["id"]
    assert second.check_and_add("run2-new", text_of(records[300])) is None


@pytest.mark.parametrize("damage", ["missing", "torn", "empty"])
def test_a_missing_or_torn_signature_file_is_rebuilt(tmp_path: Path, records: list[Record], damage: str):
    index = NearDupIndex()
    add_all(index, records[:60])
    make_run(tmp_path, "run1", records[:60])
    path = index.save_run(tmp_path, "run1")
    saved = stored(path)["sigs"]
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 if damage == "torn" else 0])

    later = NearDupIndex()
    assert later.load_runs(tmp_path, exclude="run2") == 60
    assert later.query(text_of(records[5])) == records[5]["meta"]["id"]
    # The rebuilt file is stored again, equal to the one the first run saved.
    again = stored(path)
    assert again["ids"].tolist() == [r["meta"]["id"] for r in records[:60]]
    assert np.array_equal(again["sigs"], saved)


def test_records_appended_after_a_save_are_read_from_accepted(tmp_path: Path, records: list[Record]):
    index = NearDupIndex()
    add_all(index, records[:30])
    make_run(tmp_path, "run1", records[:30])
    index.save_run(tmp_path, "run1")
    make_run(tmp_path, "run1", records[30:40])  # the run went on after its last save, then crashed

    later = NearDupIndex()
    assert later.load_runs(tmp_path) == 40
    assert later.query(text_of(records[35])) == records[35]["meta"]["id"]


def test_loading_ignores_the_excluded_run(tmp_path: Path, records: list[Record]):
    make_run(tmp_path, "old", records[:20])
    make_run(tmp_path, "current", records[20:40])
    (tmp_path / "notes").mkdir()  # a folder without accepted.jsonl is not a run
    index = NearDupIndex()
    assert index.load_runs(tmp_path, exclude="current") == 20
    assert index.query(text_of(records[25])) is None
    assert index.query(text_of(records[5])) == records[5]["meta"]["id"]
    assert sorted(p.name for p in (tmp_path / DEDUP_DIR).iterdir()) == ["old.npz"]


def test_a_resumed_run_keeps_its_rows_and_adds_new_ones(tmp_path: Path, records: list[Record]):
    make_run(tmp_path, "run1", records[:50])
    index = NearDupIndex.for_run(tmp_path, "run1")  # resumed: rebuilt from its accepted.jsonl
    assert len(index) == 50
    assert index.check_and_add(records[0]["meta"]["id"], text_of(records[0])) is None  # itself
    assert index.check_and_add("late", text_of(records[3])) == records[3]["meta"]["id"]
    add_all(index, records[50:70])
    make_run(tmp_path, "run1", records[50:70])
    index.save_run(tmp_path, "run1")

    saved = stored(signature_path(tmp_path, "run1"))
    assert saved["ids"].tolist() == [r["meta"]["id"] for r in records[:70]]
    assert len(read_jsonl(tmp_path / "run1" / "accepted.jsonl")) == 70


def test_signatures_made_with_other_parameters_are_rebuilt(tmp_path: Path, records: list[Record]):
    bigrams = NearDupIndex(ngram=2)
    add_all(bigrams, records[:20])
    make_run(tmp_path, "run1", records[:20])
    saved_bigrams = tmp_path / "bigrams.npz"
    saved_bigrams.write_bytes(bigrams.save_run(tmp_path, "run1").read_bytes())
    # A crashed save leaves a temporary file behind; it is never read.
    (tmp_path / DEDUP_DIR / ".run1.npz.999.tmp").write_bytes(b"half a file")

    trigrams = NearDupIndex(ngram=3)
    assert trigrams.load_runs(tmp_path) == 20
    assert trigrams.query(text_of(records[4])) == records[4]["meta"]["id"]
    fresh = NearDupIndex(ngram=3)
    add_all(fresh, records[:20])
    fresh.save_run(tmp_path / "elsewhere", "run1")
    rebuilt = stored(signature_path(tmp_path, "run1"))["sigs"]
    assert np.array_equal(rebuilt, stored(signature_path(tmp_path / "elsewhere", "run1"))["sigs"])
    assert not np.array_equal(rebuilt[:, :8], stored(saved_bigrams)["sigs"][:, :8])


def test_lsh_bands_match_datasketchs_own_optimiser() -> None:
    """Our (bands, rows) are the ones datasketch would pick, so passing them changes no result."""
    from datasketch.lsh import _optimal_param

    from factory.dedup._lsh import lsh_params

    for threshold in (0.5, 0.8, 0.85, 0.9, 0.95):
        for num_perm in (64, 128, 256):
            assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_importing_dedup_leaves_scipy_integrate_unloaded_but_usable() -> None:
    """A fresh process: dedup works without the real scipy.integrate, which still loads on first use."""
    script = """
import sys
from factory.dedup import NearDupIndex
index = NearDupIndex()
assert index.check_and_add("a", "user: one two three four five six seven") is None
assert index.query("user: one two three four five six seven!") == "a"
placeholder = sys.modules["scipy.integrate"]
assert not hasattr(placeholder, "__file__"), placeholder  # the real module was never imported
assert not any(m.startswith("scipy.integrate.") for m in sys.modules)
from scipy.integrate import quad, trapezoid
area, _ = quad(lambda x: x * x, 0.0, 3.0)
assert abs(area - 9.0) < 1e-9 and trapezoid([1.0, 2.0, 3.0]) == 4.0
import scipy.integrate
assert sys.modules["scipy.integrate"].__file__.endswith("__init__.py")
assert scipy.integrate.simpson([1.0, 2.0, 3.0]) == 4.0
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_scipy_submodules_import_while_scipy_integrate_is_deferred() -> None:
    """scipy.stats imports scipy.integrate._quadrature directly: the stand-in must be a package."""
    script = """
import sys
import factory.dedup
assert not hasattr(sys.modules["scipy.integrate"], "__file__")
from scipy.stats import binomtest
assert abs(binomtest(3, 10).pvalue - 0.34375) < 1e-12
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
