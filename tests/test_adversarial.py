"""`factory adversarial` end to end on the built-in teacher: fresh attack batches, novel across runs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import read_jsonl, record_ids, run_factory

from factory.novelty import AttackScreen

THRESHOLD = 0.85  # DEFAULTS["dedup_threshold"], restated: the test recomputes, it does not import
# The families the built-in teacher has phrasings for; new catalogue families come with their own.
FAMILIES = (
    "ignore_previous_instructions,persona_swap,authority_impersonation,fake_state_block,trust_escalation,"
    "action_outside_allowed,secret_extraction,system_prompt_extraction,encoding_obfuscation,"
    "multi_turn_escalation"
)


def _shingles(record: dict[str, Any]) -> frozenset[tuple[str, ...]]:
    """Word 3-grams of a record's user turns with its canaries masked: the test's own attack measure."""
    text = "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")
    for canary in sorted(record["meta"]["canaries"], key=len, reverse=True):
        text = text.replace(canary, " canary ")
    words = re.sub(r"[^\w\s]+", " ", text.lower()).split()
    if len(words) <= 3:
        return frozenset([tuple(words)])
    return frozenset(zip(words, words[1:], words[2:], strict=False))


def _jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    return len(a & b) / len(a | b)


def _repeat_rate(batch: list[frozenset[Any]], others: list[frozenset[Any]] | None) -> float:
    """Share of the batch with a partner at or above the threshold: inside it (None) or in `others`."""
    hits = 0
    for i, attack in enumerate(batch):
        pool = batch[:i] + batch[i + 1 :] if others is None else others
        hits += any(_jaccard(attack, other) >= THRESHOLD for other in pool)
    return hits / len(batch)


def _attacks(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(run / "accepted.jsonl") if r["meta"]["kind"] == "adversarial"]


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("out")
    for name in ("first", "second"):
        result = run_factory(
            "adversarial", "--n", "200", "--families", FAMILIES, "--run", name, "--output-dir", str(out)
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return out / "first", out / "second"


def test_each_batch_is_novel_inside_and_across_the_two(batches: tuple[Path, Path]) -> None:
    first, second = ([_shingles(r) for r in _attacks(run)] for run in batches)
    assert len(first) >= 150 and len(second) >= 120
    assert _repeat_rate(first, None) <= 0.02
    assert _repeat_rate(second, None) <= 0.02
    assert _repeat_rate(second, first) <= 0.02


def test_novelty_figures_match_a_recomputation_from_the_files(batches: tuple[Path, Path]) -> None:
    first, second = batches
    accepted_ids = {run.name: {r["meta"]["id"]: r for r in _attacks(run)} for run in batches}
    for run, earlier in ((first, 0), (second, len(accepted_ids["first"]))):
        novelty = orjson.loads((run / "novelty.json").read_bytes())
        report = orjson.loads((run / "report.json").read_bytes())
        stale = [r for r in read_jsonl(run / "rejected.jsonl") if r["reason"] == "stale_attack"]
        inside = [r for r in stale if r["repeats"]["run"] == run.name]
        novel = len(accepted_ids[run.name])
        assert novelty["attacks"] == novel + len(stale) == 200 - report["rejected"] + len(stale)
        assert (novelty["novel"], novelty["stale_inside"]) == (novel, len(inside))
        assert novelty["stale_across"] == len(stale) - len(inside)
        assert novelty["novelty_rate"] == round(novel / novelty["attacks"], 4)
        assert novelty["earlier"] == {"runs": int(earlier > 0), "attacks": earlier}
        assert report["novelty"] == novelty
        assert report["rejection_reasons"].get("stale_attack", {"count": 0})["count"] == len(stale)
        assert "## Attack novelty" in (run / "report.md").read_text()
        # every stale attack names a kept attack it really repeats (MinHash estimates Jaccard: some slack)
        for record in stale:
            repeated = accepted_ids[record["repeats"]["run"]][record["repeats"]["id"]]
            assert _jaccard(_shingles(record), _shingles(repeated)) >= THRESHOLD - 0.1, record["detail"]
        # the stale ones left accepted.jsonl but stayed finished (ledgered), so a resume skips them
        assert len(set(record_ids(run))) == len(record_ids(run)) == 200
        ledger = {line["id"] for line in read_jsonl(run / "ledger.jsonl")}
        assert {r["id"] for r in stale} <= ledger
        assert (run.parent / ".novelty" / f"{run.name}.npz").exists()


def test_a_repeated_attack_is_rejected_naming_the_one_it_repeats(
    batches: tuple[Path, Path], tmp_path: Path
) -> None:
    """The built-in teacher rarely repeats itself now, so a repeat is made by hand: same attack turns,
    another reply (which the whole-dialogue dedup would let through), in a later run."""
    first, second = batches
    shutil.copytree(first, tmp_path / "first")
    original, fresh = _attacks(first)[0], _attacks(second)[0]
    repeat = orjson.loads(orjson.dumps(original))
    repeat["meta"]["id"] = "crafted-repeat"
    repeat["messages"][-1]["content"] = "A different reply, so only the attack repeats."
    screen = AttackScreen(tmp_path, "crafted", THRESHOLD)
    assert screen.find(fresh) is None
    screen.add(fresh)
    stale = screen.find(repeat)
    assert stale is not None and stale["reason"] == "stale_attack" and stale["id"] == "crafted-repeat"
    assert stale["repeats"] == {"run": "first", "id": original["meta"]["id"], "similarity": 1.0}
    # The same attack again inside the batch repeats the kept one, which names this batch.
    again = orjson.loads(orjson.dumps(fresh))
    again["meta"]["id"] = "crafted-again"
    inside = screen.find(again)
    assert inside is not None and inside["repeats"]["run"] == "crafted"
    assert "of this batch" in inside["detail"]


def test_the_batch_is_ready_for_training_without_its_stale_attacks(batches: tuple[Path, Path]) -> None:
    for run in batches:
        for split in ("train", "valid", "test"):
            rows = read_jsonl(run / "data" / f"{split}.jsonl")
            assert rows and all(set(row) == {"messages"} for row in rows), split
            assert all(row["messages"][-1]["role"] == "assistant" for row in rows)
        full = read_jsonl(run / "data" / "aios_finetune_adversarial.jsonl")
        kept = [r["messages"] for r in read_jsonl(run / "accepted.jsonl")]
        # the export shuffles; the same dialogues, none of them stale
        assert sorted(orjson.dumps(r["messages"]) for r in full) == sorted(map(orjson.dumps, kept))


def test_families_restrict_the_mix_and_earlier_generate_runs_count(tmp_path: Path) -> None:
    out = str(tmp_path)
    mix = "ignore_previous_instructions=1,persona_swap=1,obedience=1"
    assert (
        run_factory("generate", "--n", "60", "--mix", mix, "--run", "gen", "--output-dir", out).returncode
        == 0
    )
    result = run_factory(
        "adversarial",
        "--n",
        "40",
        "--families",
        "ignore_previous_instructions,persona_swap",
        "--output-dir",
        out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith("adv-")]
    records = read_jsonl(run / "accepted.jsonl") + read_jsonl(run / "rejected.jsonl")
    assert len(records) == 40
    assert {r["meta"]["family"] for r in records} == {"ignore_previous_instructions", "persona_swap"}
    novelty = orjson.loads((run / "novelty.json").read_bytes())
    # only the generate run's attacks are indexed, not its obedience records
    assert novelty["earlier"] == {"runs": 1, "attacks": len(_attacks(tmp_path / "gen"))}
    assert 0 < novelty["earlier"]["attacks"] < len(read_jsonl(tmp_path / "gen" / "accepted.jsonl"))


def test_unknown_or_non_adversarial_family_is_a_clear_error(tmp_path: Path) -> None:
    result = run_factory(
        "adversarial", "--n", "5", "--families", "persona_swapp", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert (
        "unknown family 'persona_swapp'" in result.stderr and "did you mean 'persona_swap'" in result.stderr
    )
    result = run_factory(
        "adversarial", "--n", "5", "--families", "answer_from_state", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2 and "not an attack" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was started
