"""Transform chains over any attack family: chosen by seed, recorded in the plan, reversible, checked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from cli_helpers import read_jsonl, run_factory

from factory import transforms
from factory.checks import run_checks
from factory.defaults import DEFAULTS, resolve
from factory.errors import ConfigError
from factory.models import Task
from factory.plan import Overlay, families, parse_mix, plan_tasks
from factory.plan.overlay import eligible
from factory.prompts import render_request
from factory.seeds import load_worlds
from factory.state import render_state
from factory.teachers.builtin import attack_plaintext, write_turns

WORLDS = load_worlds(DEFAULTS["seeds_dir"])
MIX = parse_mix("adversarial=1")


def _plan(rate: float, n: int = 400, seed: int = 11, names: str = "all") -> list[Task]:
    overlay = Overlay.from_settings(resolve({"transform_rate": rate, "transforms": names}))
    return plan_tasks(WORLDS, n, seed, MIX, overlay=overlay)


def _pairs(n: int, seed: int = 11) -> list[tuple[Task, Task]]:
    """(task as planned without an overlay, the same task at rate 1) for the tasks that got a chain."""
    plain = plan_tasks(WORLDS, n, seed, MIX)
    return [(p, c) for p, c in zip(plain, _plan(1.0, n, seed), strict=True) if c.target.chain]


def test_rate_zero_leaves_the_plan_as_it_was() -> None:
    assert Overlay.from_settings(resolve({})) is None  # generate's default: no overlay at all
    without = [t.to_dict() for t in plan_tasks(WORLDS, 300, 11, MIX)]
    assert [t.to_dict() for t in _plan(0.0, 300)] == without
    # A chained task differs from its plain self only in payload and chain.
    for plain, chained in zip(without, (t.to_dict() for t in _plan(1.0, 300)), strict=True):
        if chained["target"]["chain"]:
            chained["target"] |= {"payload": plain["target"]["payload"], "chain": []}
        assert chained == plain


def test_every_eligible_family_gets_chains_and_the_rate_is_kept() -> None:
    tasks = _plan(1.0, 1200)
    chained = [t for t in tasks if t.target.chain]
    assert chained and all(eligible(plain) for plain, _ in _pairs(1200))
    # Nearly every eligible task is chained at rate 1 (a too-long payload goes out plain).
    assert len(chained) >= 0.95 * sum(eligible(t) for t in tasks)
    adversarial = {n for n, s in families().items() if s.kind == "adversarial"}
    assert len({t.family for t in chained}) >= 20 and {t.family for t in chained} <= adversarial
    assert len({name for t in chained for name in t.target.chain}) == len(transforms.registry())
    assert all(1 <= len(t.target.chain) <= DEFAULTS["transform_chain_max"] for t in chained)
    quarter = sum(bool(t.target.chain) for t in _plan(0.25, 1200))
    assert 0.18 * len(chained) <= quarter <= 0.32 * len(chained)


def test_the_chain_undoes_to_the_familys_own_attack_turn() -> None:
    checked = 0
    for plain, task in _pairs(600):
        chain = tuple(task.target.chain)
        hint, _, encoded = (task.target.payload or "").partition("\n\n")
        assert hint == transforms.chain_hint(chain)
        plaintext = attack_plaintext(plain)
        # It is the family's own attack turn, as the plain task's dialogue opens it.
        users = [m["content"] for m in write_turns(plain) if m["role"] == "user"]
        assert any(user[:40] == plaintext[:40] for user in users), task.family
        if transforms.round_trips(chain, plaintext):
            assert transforms.undo_chain(encoded, chain) == plaintext
            checked += 1
    assert checked >= 300


def test_builtin_dialogues_carry_the_payload_and_pass_every_checker() -> None:
    hidden = multi_turn = 0
    for task in _plan(1.0, 800, seed=12):
        if not task.target.chain:
            continue
        turns = write_turns(task)
        carriers = [
            m["content"] for m in turns if m["role"] == "user" and task.target.payload in m["content"]
        ]
        assert len(carriers) == 1 and len(turns) == 2 * task.user_turns
        multi_turn += task.user_turns > 1
        user = " ".join(m["content"] for m in turns if m["role"] == "user")
        messages = [{"role": "system", "content": render_state(task.state)}, *turns]
        assert run_checks(messages, task, task.state) == [], (task.family, task.target.chain)
        token = next((c for c in task.target.canaries if c[-5:-4] == "-"), None)
        if token and "base64" in task.target.chain:
            assert token not in user  # the demand for the token travels encoded, not beside it
            hidden += 1
    assert hidden >= 20 and multi_turn >= 20


def test_the_teacher_request_names_the_chain_and_carries_the_payload() -> None:
    task = next(t for t in _plan(1.0, 50) if t.target.chain)
    user = render_request(task).messages[1]["content"]
    assert " → ".join(task.target.chain) in user and task.target.payload in user


def test_transforms_restrict_the_draw_and_bad_values_are_named() -> None:
    chained = [t for t in _plan(1.0, 300, names="base64,rot13") if t.target.chain]
    assert chained and Counter(n for t in chained for n in t.target.chain).keys() <= {"base64", "rot13"}
    with pytest.raises(ConfigError, match="did you mean 'base64'"):
        Overlay.from_settings(resolve({"transform_rate": 0.5, "transforms": "base46"}))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Overlay.from_settings(resolve({"transform_rate": 1.5}))


def test_adversarial_chains_a_quarter_records_it_and_resume_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "output"
    args = ["adversarial", "--n", "120", "--run", "adv", "--output-dir", str(out)]
    done = run_factory(*args)
    assert done.returncode == 0, done.stderr
    run = orjson.loads((out / "adv" / "run.json").read_bytes())
    assert run["transform_rate"] == DEFAULTS["adversarial_transform_rate"]
    records = read_jsonl(out / "adv" / "accepted.jsonl")
    chained = [r for r in records if r["meta"]["plan"]["target"].get("chain")]
    assert chained, "no chained attack in 120"
    for record in chained:
        payload = record["meta"]["plan"]["target"]["payload"]
        assert any(payload in m["content"] for m in record["messages"] if m["role"] == "user")
    # Resuming under another rate would mix two plans: refused, naming the setting.
    again = run_factory(*args, "--transform-rate", "0.5")
    assert again.returncode != 0 and "transform_rate: was 0.25, now 0.5" in again.stderr
