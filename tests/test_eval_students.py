"""Students: turn-by-turn conversations with a real HTTP server (via the pool) and with mlx_lm in-process."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from factory.errors import ConfigError
from factory.evaluate.students import (
    MLXStudent,
    OpenAIStudent,
    Student,
    Transcript,
    make_student,
)
from factory.evaluate.suite import EvalItem
from factory.paths import SEEDS_DIR
from factory.plan import parse_mix, plan_tasks
from factory.prompts import render_request
from factory.seeds import load_worlds
from factory.testing.student_server import start_student_server
from factory.testing.teacher_server import answer_for
from factory.testing.tiny_model import write_random_adapter

FAST_POOL = {"retries": 6, "backoff_base": 0.01, "backoff_max": 0.05}


def item(item_id: str, user_turns: list[str], system: str = "== STATE ==\n{}\n== END STATE ==") -> EvalItem:
    return EvalItem(
        id=item_id,
        family="answer_from_state",
        kind="obedience",
        template="w",
        system=system,
        user_turns=user_turns,
        meta={},
        reference=[],
    )


def spec_turns(n: int, seed: int = 0) -> list[str]:
    """User turns that each carry a task spec: the test teacher answers each with a different dialogue."""
    tasks = plan_tasks(load_worlds(SEEDS_DIR), n, seed, parse_mix("obedience=1"))
    return [render_request(task).messages[-1]["content"] for task in tasks]


def answer(student: Student, items: list[EvalItem]) -> dict[str, Transcript]:
    """Run a student over items; transcripts by item id (each reported exactly once)."""
    done: list[Transcript] = []

    async def main() -> None:
        await student.run(items, done.append)

    anyio.run(main)
    assert sorted(t.item_id for t in done) == sorted(i.id for i in items)
    return {t.item_id: t for t in done}


# --- OpenAIStudent against the fault-injecting test server -----------------------------------


def test_turns_go_one_at_a_time_with_the_growing_history(teacher_server) -> None:
    server = teacher_server()
    turns = spec_turns(4)
    items = [item("multi", turns[:3]), item("single", turns[3:])]
    student = OpenAIStudent(server.base_url, max_tokens=64, concurrency=2, pool=FAST_POOL)
    transcripts = answer(student, items)

    multi = transcripts["multi"]
    assert multi.error is None
    assert [m["role"] for m in multi.messages] == ["system"] + ["user", "assistant"] * 3
    assert [m["content"] for m in multi.messages[1::2]] == turns[:3]
    assert multi.finish_reasons == ["stop"] * 3
    # Each reply is the server's answer to exactly that turn's prompt: system, earlier turns, user_k.
    for k in range(3):
        sent = multi.messages[: 2 * k + 2]
        assert sent[-1]["content"] == turns[k]
        assert multi.messages[2 * k + 2]["content"] == answer_for(sent)[0]
    assert len(transcripts["single"].messages) == 3

    # The server saw the three turns of the item in order, one request each, and nothing else.
    seen = [task_id for _, outcome, task_id in server.stats()["events"] if outcome == "ok"]
    multi_ids = [answer_for([{"role": "user", "content": t}])[1] for t in turns[:3]]
    assert [i for i in seen if i in multi_ids] == multi_ids
    assert len(seen) == 4


def test_the_server_sees_each_prefix_default_model_and_no_seed() -> None:
    """A table student answers only the exact prefixes [system, u1, a1, ..., u_k]: every turn must hit."""
    it = item("multi", ["What is my name?", "And my timezone?", "Thanks, bye"])
    replies = ["Your name is Ada.", "Europe/Berlin (user.timezone).", "Bye!"]
    entries, prefix = [], [{"role": "system", "content": it.system}]
    for user, reply in zip(it.user_turns, replies, strict=True):
        prefix = [*prefix, {"role": "user", "content": user}]
        entries.append({"messages": prefix, "reply": reply, "finish_reason": "stop"})
        prefix = [*prefix, {"role": "assistant", "content": reply}]
    with start_student_server(entries, {"default_reply": None}) as server:
        transcript = answer(OpenAIStudent(server.base_url, max_tokens=77, pool=FAST_POOL), [it])["multi"]
        requests = server.stats()["requests"]
    assert transcript.error is None
    assert transcript.messages == prefix
    assert [r["hit"] for r in requests] == [True, True, True]
    assert {r["model"] for r in requests} == {"default_model"}
    assert not any(r["seed"] or r["response_format"] or r["n"] for r in requests)
    assert {(r["temperature"], r["max_tokens"]) for r in requests} == {(0.0, 77)}


def test_settings_record_greedy_decoding_and_default_model() -> None:
    student = make_student("http://127.0.0.1:9/v1", None, max_tokens=None, concurrency=3)
    assert isinstance(student, OpenAIStudent)
    settings = student.settings()
    assert settings["model"] == "default_model"
    assert settings["temperature"] == 0.0
    assert settings["max_tokens"] == 512
    assert settings["concurrency"] == 3
    assert "seed" not in settings


def test_429_and_500_are_retried_and_change_nothing(teacher_server) -> None:
    items = [item(f"i{n}", spec_turns(3, seed=n)) for n in range(4)]
    clean = answer(OpenAIStudent(teacher_server().base_url, pool=FAST_POOL), items)
    faulty = teacher_server({"p_429": 0.15, "p_500": 0.15, "retry_after": 0.05, "seed": 8})
    # 10 attempts: a request failing them all (0.3 ** 10) would be a flake, not a finding.
    retried = answer(OpenAIStudent(faulty.base_url, pool={**FAST_POOL, "retries": 10}), items)

    outcomes = faulty.stats()["outcomes"]
    assert outcomes.get("http_429", 0) > 0 and outcomes.get("http_500", 0) > 0
    assert outcomes["ok"] == 12  # 4 items x 3 turns, each answered once in the end
    assert retried == clean


def test_a_dead_server_gives_every_item_an_error_and_does_not_raise(teacher_server) -> None:
    server = teacher_server()
    url = server.base_url
    server.stop(kill=True)
    items = [item(f"i{n}", ["hello?", "still there?", "bye"]) for n in range(3)]
    transcripts = answer(OpenAIStudent(url, pool={**FAST_POOL, "retries": 2}), items)
    for transcript in transcripts.values():
        assert transcript.error is not None and transcript.error.startswith("turn 1 of 3:")
        assert "gave up after 2 attempts" in transcript.error
        assert [m["role"] for m in transcript.messages] == ["system"]
        assert transcript.finish_reasons == []


def test_a_server_that_keeps_failing_errors_without_stopping_the_others(teacher_server) -> None:
    server = teacher_server({"p_500": 1.0})
    items = [item("a", ["one"]), item("b", ["two", "three"])]
    transcripts = answer(OpenAIStudent(server.base_url, pool={**FAST_POOL, "retries": 3}), items)
    for transcript in transcripts.values():
        assert transcript.error is not None and "HTTP 500" in transcript.error
    assert server.stats()["outcomes"]["http_500"] == 6  # both items tried 3 times, neither raised


def test_make_student_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter-path"):
        make_student("http://127.0.0.1:8080/v1", "adapters/")
    with pytest.raises(ConfigError, match="neither an http"):
        make_student(str(tmp_path / "missing"), None)
    with pytest.raises(ConfigError, match=r"adapter_config\.json"):
        make_student(str(tmp_path), str(tmp_path))
    with pytest.raises(ConfigError, match="greedily"):
        make_student(str(tmp_path), None, temperature=0.7)
    assert isinstance(make_student(str(tmp_path), None, max_tokens=8), MLXStudent)


# --- MLXStudent with the tiny offline model ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter folder as mlx_lm.lora writes one, with random B so it changes outputs."""
    return write_random_adapter(tiny_model, tmp_path_factory.mktemp("tiny_adapter"))


def mlx_items() -> list[EvalItem]:
    system = '== STATE ==\n{"user": {"name": "Ada", "timezone": "Europe/Berlin"}}\n== END STATE =='
    return [
        item("short", ["Hi"], system),
        item(
            "long",
            ["What is my `timezone`? Answer from the state, cite the field, and say why. " * 4],
            system,
        ),
        item("multi", ["What is my name?", "And my timezone?", "Thanks, bye"], system),
    ]


def test_mlx_greedy_is_deterministic_and_grows_turn_by_turn(tiny_model: Path) -> None:
    items = mlx_items()
    first = answer(MLXStudent(tiny_model, max_tokens=6, batch_size=8), items)
    second = answer(MLXStudent(tiny_model, max_tokens=6, batch_size=8), items)
    assert first == second

    multi = first["multi"]
    assert [m["role"] for m in multi.messages] == ["system"] + ["user", "assistant"] * 3
    assert [m["content"] for m in multi.messages[1::2]] == items[2].user_turns
    assert len(multi.finish_reasons) == 3 and len(first["short"].finish_reasons) == 1
    assert all(t.error is None for t in first.values())


def test_mlx_batches_of_different_lengths_match_one_by_one(tiny_model: Path) -> None:
    """Left padding in a batch must not change a greedy reply: batched == each item alone."""
    items = mlx_items()
    batched = answer(MLXStudent(tiny_model, max_tokens=8, batch_size=3), items)
    alone = answer(MLXStudent(tiny_model, max_tokens=8, batch_size=1), items)
    assert batched == alone


def test_mlx_max_tokens_cuts_the_same_greedy_reply(tiny_model: Path) -> None:
    conversations = [
        [{"role": "system", "content": "S"}, {"role": "user", "content": turn}]
        for turn in ("Hi", "What is my name?")
    ]
    short = MLXStudent(tiny_model, max_tokens=5).generate(conversations)
    longer = MLXStudent(tiny_model, max_tokens=12).generate(conversations)
    for cut, full in zip(short, longer, strict=True):
        assert len(cut.token_ids) <= 5
        assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
        # "length" exactly when the limit was reached; a random tiny model rarely ends its turn.
        assert cut.finish_reason == ("length" if len(cut.token_ids) == 5 else "stop")
    assert [r.finish_reason for r in short] == ["length", "length"]
    transcript = answer(MLXStudent(tiny_model, max_tokens=5), [item("x", ["Hi"], "S")])["x"]
    assert transcript.messages[-1]["content"] == short[0].text
    assert transcript.finish_reasons == ["length"]


def test_mlx_adapter_is_loaded_and_changes_replies(tiny_model: Path, tiny_adapter: Path) -> None:
    items = mlx_items()
    base = answer(make_student(str(tiny_model), None, max_tokens=6), items)
    tuned_student = make_student(str(tiny_model), str(tiny_adapter), max_tokens=6)
    tuned = answer(tuned_student, items)
    assert tuned_student.settings()["adapter"] == str(tiny_adapter)
    assert tuned_student.settings()["temperature"] == 0.0
    assert any(base[i].messages != tuned[i].messages for i in base)
    assert tuned == answer(make_student(str(tiny_model), str(tiny_adapter), max_tokens=6), items)
