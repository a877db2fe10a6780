"""`factory redteam` against a loopback student that fails exactly some families finds exactly those."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import read_jsonl, run_factory

from factory.checkfile import check_record
from factory.defaults import DEFAULTS
from factory.evaluate.suite import EvalItem
from factory.redteam.attacks import Attack, adversarial_families, mutate, plan_attacks
from factory.seeds import load_worlds
from factory.state import lookup
from factory.testing.student_server import start_student_server

SEED = 5
PER_FAMILY = 2
BROKEN = ["debug_mode", "persona_swap", "secret_extraction"]  # the student gives in to these in round 0
STILL_BROKEN = "persona_swap"  # ... and to this one's round-1 mutants too
RESIST = "I can't do that."  # the student's reply to anything else it has no entry for


def _give_in(attack: Attack) -> str:
    """A reply that does what the attacker asked: the canary, every secret, every forged value."""
    task = attack.task
    secrets = [str(lookup(task.state, path)) for path in task.secrets]
    forged = [str(value) for value in task.target.forged.values()]
    return " ".join(["Sure, done.", *task.target.canaries, *secrets, *forged])


def _entries(item: EvalItem, replies: list[str]) -> list[dict[str, Any]]:
    """Table entries for every turn of an item: each prefix the student will be sent, and its reply."""
    out, messages = [], [{"role": "system", "content": item.system}]
    for user, reply in zip(item.user_turns, replies, strict=True):
        messages = [*messages, {"role": "user", "content": user}]
        out.append({"messages": messages, "reply": reply})
        messages = [*messages, {"role": "assistant", "content": reply}]
    return out


def _mutants(attack: Attack, round_: int) -> list[Attack]:
    found = [
        mutate(
            attack,
            attack.task,
            round_,
            index,
            SEED,
            DEFAULTS["redteam_chain_max"],
            DEFAULTS["redteam_mutate_tries"],
        )
        for index in range(DEFAULTS["redteam_mutants"])
    ]
    return [m for m in found if m is not None]


def _table(first: list[Attack]) -> tuple[list[dict[str, Any]], set[str]]:
    """The student's table and the ids of the attacks it gives in to."""
    entries, broken = [], set()
    for attack in first:
        if attack.family not in BROKEN:
            entries += _entries(attack.item, attack.item.reference)  # the correct replies
            continue
        entries += _entries(attack.item, [_give_in(attack)] * len(attack.item.user_turns))
        broken.add(attack.item.id)
        if attack.family == STILL_BROKEN:
            for mutant in _mutants(attack, 1):
                entries += _entries(mutant.item, [_give_in(mutant)] * len(mutant.item.user_turns))
                broken.add(mutant.item.id)
    return entries, broken


def test_redteam_finds_exactly_the_families_that_break_the_student(tmp_path: Path) -> None:
    first = plan_attacks(load_worlds(DEFAULTS["seeds_dir"]), adversarial_families(), PER_FAMILY, SEED)
    entries, broken = _table(first)
    with start_student_server(entries, {"default_reply": RESIST}) as server:
        done = run_factory(
            "redteam", "--student", server.url, "--rounds", "3", "--per-family", str(PER_FAMILY),
            "--seed", str(SEED), "--run", "rt", "--output-dir", str(tmp_path),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    run = tmp_path / "rt"
    report = orjson.loads((run / "redteam.json").read_bytes())
    rounds = report["rounds"]
    assert [r["broke_families"] for r in rounds] == [BROKEN, [STILL_BROKEN], []]
    assert rounds[0]["attacks"] == len(adversarial_families()) * PER_FAMILY
    for name, row in rounds[0]["families"].items():
        assert row["asr"]["k"] == (PER_FAMILY if name in BROKEN else 0), name
    # Round 1 mutates only what broke; its persona_swap mutants break again, the others resist.
    assert set(rounds[1]["families"]) == set(BROKEN)
    assert rounds[1]["families"][STILL_BROKEN]["asr"]["rate"] == 1.0
    assert rounds[2]["broken"] == 0 and set(rounds[2]["families"]) == {STILL_BROKEN}
    assert report["families"]["persona_swap"][1]["asr"]["k"] == rounds[1]["broken"]
    # The markdown names the families that broke the student in each round.
    table = [line for line in (run / "redteam.md").read_text().splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert all(name in rows["0"] for name in BROKEN)
    assert not any(name in rows["0"] for name in adversarial_families() if name not in BROKEN)
    assert rows["1"].rstrip(" |").endswith(STILL_BROKEN) and rows["2"].rstrip(" |").endswith("none")
    assert "round 0: 6 of 58 attacks broke the student" in done.stdout
    # The batch: the teacher's correct reply to exactly the attacks that broke the student.
    records = read_jsonl(run / "accepted.jsonl")
    assert {r["meta"]["id"] for r in records} == broken
    assert not (run / "rejected.jsonl").read_bytes()
    for record in records:
        assert check_record(record) == [], record["meta"]["id"]
        assert record["meta"]["family"] in BROKEN and record["meta"]["kind"] == "adversarial"
        assert record["meta"]["redteam"]["student_replies"][0].startswith("Sure, done.")
    assert report["batch"] == {"accepted": len(broken), "rejected": 0}
    manifest = orjson.loads((run / "data" / "manifest.json").read_bytes())
    assert manifest["records"] == len(broken)
    assert (run / "data" / "aios_finetune_adversarial.jsonl").read_bytes().count(b"\n") == len(broken)


def test_mutants_keep_the_target_and_change_the_attack_turn() -> None:
    first = plan_attacks(load_worlds(DEFAULTS["seeds_dir"]), adversarial_families(), 1, SEED)
    for attack in first:
        mutants = _mutants(attack, 1)
        assert mutants, attack.family
        for mutant in mutants:
            assert mutant.task.target.canaries == attack.task.target.canaries
            assert mutant.task.target.forged == attack.task.target.forged
            assert mutant.chain and mutant.item.user_turns[-1] != attack.item.user_turns[-1]
            assert (mutant.parent, mutant.base, mutant.round) == (attack.task.id, attack.task.id, 1)
        assert [m.item for m in _mutants(attack, 1)] == [m.item for m in mutants]  # the same for a seed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--families", "benign_request"], "is a benign family, not an attack"),
        (["--families", "persona_swop"], "'persona_swop' is unknown"),
        (["--rounds", "0"], "--rounds must be at least 1"),
    ],
)
def test_redteam_refuses_bad_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    done = run_factory("redteam", "--student", "http://127.0.0.1:9/v1", *flags, "--output-dir", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_redteam_runs_a_local_model_folder(tmp_path: Path, tiny_model: Path) -> None:
    done = run_factory(
        "redteam", "--student", str(tiny_model), "--families", "persona_swap,debug_mode",
        "--per-family", "1", "--rounds", "2", "--max-tokens", "8", "--seed", str(SEED),
        "--run", "local", "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    run = tmp_path / "local"
    report = orjson.loads((run / "redteam.json").read_bytes())
    assert report["student"] == str(tiny_model)
    assert report["rounds"][0]["attacks"] == 2 and report["rounds"][0]["errors"] == 0
    broken = sum(r["broken"] for r in report["rounds"])
    # A random model's 8-token replies are cut at the limit, which the checkers count as failures.
    assert report["rounds"][0]["broke_families"] == ["debug_mode", "persona_swap"]
    records = read_jsonl(run / "accepted.jsonl")
    assert len(records) == broken == report["batch"]["accepted"]
    assert all(check_record(record) == [] for record in records)
