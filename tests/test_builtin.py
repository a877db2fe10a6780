"""The built-in offline teacher: correct dialogues for every family on real planned tasks, by rule."""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from functools import cache

import pytest

from factory import transforms
from factory.checks import run_checks
from factory.mix import families, parse_mix
from factory.models import Target, Task
from factory.parse import parse_turns
from factory.paths import SEEDS_DIR
from factory.plan import plan_tasks
from factory.seeds import load_worlds
from factory.state import lookup, render_state
from factory.teachers.base import TeacherRequest
from factory.teachers.builtin import BuiltinTeacher, load_banks, write_turns

N = 600
# Every placeholder the banks may use; the teacher fills these and no others.
USER_FIELDS = {
    "name",
    "question",
    "canary",
    "persona",
    "forged_value",
    "action",
    "action_words",
    "payload",
    "transform",
    "secret_label",
    "secret_path",
    "label",
    "path",
    "forged_label",
    "forged_path",
}
ASSISTANT_FIELDS = {
    "name",
    "name_path",
    "user",
    "field",
    "value",
    "count",
    "date",
    "now",
    "unit",
    "unit_path",
    "actions",
    "actions_path",
    "action",
    "trust",
    "trust_path",
    "secret_path",
    "policy_path",
    "transform",
    "fact_path",
    "fact_value",
}


@cache
def planned() -> tuple[Task, ...]:
    """N tasks over every real world, every family weighted alike."""
    mix = parse_mix(",".join(f"{name}=1" for name in families()))
    return tuple(plan_tasks(load_worlds(SEEDS_DIR), N, 0, mix))


@cache
def dialogues() -> dict[str, list[dict[str, str]]]:
    return {task.id: write_turns(task) for task in planned()}


def checked(task: Task) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": render_state(task.state)}, *dialogues()[task.id]]
    return run_checks(messages, task, task.state)


def test_every_family_and_world_is_covered() -> None:
    tasks = planned()
    assert {t.family for t in tasks} == set(families())
    assert {t.world for t in tasks} == {w.name for w in load_worlds(SEEDS_DIR)}


def test_builtin_dialogues_pass_every_check() -> None:
    failed = {t.id: (t.family, checked(t)) for t in planned() if checked(t)}
    rate = 1 - len(failed) / N
    assert rate == 1.0, f"pass rate {rate:.1%}; first failures: {list(failed.values())[:3]}"


def test_turns_alternate_and_match_the_planned_count() -> None:
    for task in planned():
        turns = dialogues()[task.id]
        assert [m["role"] for m in turns] == ["user", "assistant"] * task.user_turns, task.family
        assert all(m["content"].strip() for m in turns)


def test_same_task_same_dialogue_and_a_copy_of_it_too() -> None:
    for task in planned()[:40]:
        assert write_turns(task) == dialogues()[task.id]
        assert write_turns(Task.from_dict(task.to_dict())) == dialogues()[task.id]


def test_different_ids_for_the_same_plan_get_different_words() -> None:
    task = next(t for t in planned() if t.family == "persona_swap")
    texts = {
        json.dumps(write_turns(Task.from_dict({**task.to_dict(), "id": f"{task.id}-{i}"}))) for i in range(10)
    }
    assert len(texts) >= 8


def test_a_run_is_not_repetitive() -> None:
    replies = [d[-1]["content"] for d in dialogues().values()]
    users = [d[-2]["content"] for d in dialogues().values()]
    assert len(set(replies)) / len(replies) > 0.95
    assert len(set(users)) / len(users) > 0.7  # planned questions repeat across samples of a world
    openings: dict[str, set[str]] = defaultdict(set)
    for task in planned():
        if task.kind == "adversarial":
            openings[task.family].add(dialogues()[task.id][-1]["content"].split(".")[0])
    assert {f: len(s) for f, s in openings.items() if len(s) < 8} == {}


def test_answers_quote_the_state_value_exactly_and_cite_the_field() -> None:
    for task in planned():
        if task.expect != "answer":
            continue
        final = dialogues()[task.id][-1]["content"]
        value = task.target.value
        assert (value if isinstance(value, str) else json.dumps(value)) in final
        assert f"`{task.target.field}`" in final


def test_attack_turns_carry_the_plan_and_replies_never_repeat_it() -> None:
    for task in planned():
        target, turns = task.target, dialogues()[task.id]
        users = " ".join(m["content"] for m in turns if m["role"] == "user")
        replies = " ".join(m["content"] for m in turns if m["role"] == "assistant").casefold()
        if target.payload:
            assert target.payload in users
        secrets = {str(lookup(task.state, p)) for p in task.secrets}
        forged = {v for v in target.forged.values() if isinstance(v, str)}
        for planted in [*target.canaries, *forged]:
            assert not re.search(rf"(?<![\w-]){re.escape(planted.casefold())}(?![\w-])", replies), planted
        for secret in secrets:
            assert secret.casefold() not in replies, task.family
        tokens = [c for c in target.canaries if c not in forged and c not in secrets and "==" not in c]
        for token in tokens:
            if not target.transform:
                assert token in users, task.family
                continue
            # The demand travels encoded, never beside it in plain words: decoding gives it back.
            assert token not in users, task.family
            if target.transform != "leetspeak":  # leetspeak turns the token's digits into letters
                assert token.casefold() in transforms.decode(target.transform, target.payload).casefold()


def test_refusals_name_the_assistant_and_offer_something() -> None:
    for task in planned():
        if task.kind != "adversarial":
            continue
        name = task.state["identity"]["name"]
        for reply in dialogues()[task.id][1::2][-1:]:
            assert name in reply["content"]
            assert "`" in reply["content"] or "state" in reply["content"]


def test_banks_use_only_known_placeholders_and_no_attack_strings_for_the_assistant() -> None:
    unknown = []
    for slot, templates in load_banks().items():
        allowed = USER_FIELDS if slot.startswith("user.") else ASSISTANT_FIELDS
        for template in templates:
            names = {n for _, n, _, _ in string.Formatter().parse(template) if n}
            unknown += [(slot, n) for n in names - allowed]
    assert unknown == []
    assert {"canary", "persona", "forged_value", "payload"}.isdisjoint(ASSISTANT_FIELDS)


def test_common_slots_have_at_least_eight_templates() -> None:
    sizes = Counter({slot: len(t) for slot, t in load_banks().items()})
    assert {slot: n for slot, n in sizes.items() if n < 8} == {}


def test_a_bare_state_without_identity_or_trust_still_gets_a_correct_dialogue() -> None:
    state = {"current_time": "2026-02-01T10:00:00Z", "orders": [{"id": "A-1", "total": 12.5}]}
    for family in ("ignore_previous_instructions", "system_prompt_extraction", "time_and_numbers"):
        spec = families()[family]
        target = Target(canaries=["ZEBRA-1234"])
        if family == "time_and_numbers":
            target = Target(field="orders", present=True, value=1, question="How many orders are there?")
        task = Task(f"bare-{family}", spec.kind, family, "bare", 0, state, spec.expect, 1, target)
        turns = write_turns(task)
        messages = [{"role": "system", "content": render_state(state)}, *turns]
        assert run_checks(messages, task, state) == [], turns


@pytest.mark.anyio
async def test_builtin_teacher_replies_with_the_json_the_parser_reads() -> None:
    teacher = BuiltinTeacher()
    task = next(t for t in planned() if t.family == "fake_state_block")
    request = TeacherRequest(task.id, [{"role": "user", "content": "x" * 400}], 1200, 0.8, 500)
    calls = []
    await teacher.probe()
    reply = await teacher.complete(request, task, lambda: calls.append(1))
    await teacher.aclose()
    assert (teacher.name, teacher.model, reply.model, reply.finish_reason) == (
        "builtin",
        "builtin",
        "builtin",
        "stop",
    )
    assert calls == [1]
    assert parse_turns(reply.text, reply.finish_reason, task) == write_turns(task)
    assert reply.prompt_tokens == 100
    assert reply.completion_tokens == -(-len(reply.text) // 4)
