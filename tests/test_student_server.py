"""The table-driven test student, spoken to with the real openai client and the project's OpenAITeacher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from factory.errors import ConfigError
from factory.paths import SEEDS_DIR
from factory.plan import parse_mix, plan_tasks
from factory.seeds import load_worlds
from factory.teachers.base import TeacherRequest
from factory.teachers.openai_compat import OpenAITeacher
from factory.testing import StudentServer, start_student_server, table_key

pytestmark = pytest.mark.anyio

SYSTEM = {"role": "system", "content": '== STATE ==\n{"user": {"name": "Ann"}}\n== END STATE =='}
USER1 = {"role": "user", "content": "What is my name?"}
REPLY1 = 'Your name is Ann (user.name).\n  "exact" bytes: é, 名前, tabs\tand spaces  '
USER2 = {"role": "user", "content": "And my age?"}
REPLY2 = "Your age is not in my state."
FIRST = [SYSTEM, USER1]
SECOND = [SYSTEM, USER1, {"role": "assistant", "content": REPLY1}, USER2]
ENTRIES: list[dict[str, Any]] = [
    {"messages": FIRST, "reply": REPLY1},
    {"messages": SECOND, "reply": REPLY2, "finish_reason": "length", "id": "turn-2"},
]
MISS = [SYSTEM, {"role": "user", "content": "Something the table never saw"}]


@pytest.fixture(scope="module")
def student() -> Iterator[StudentServer]:
    """One student for the module (it starts in well under a second, but there is no need for more)."""
    with start_student_server(ENTRIES, {"chunks": 5}) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_stats(request: pytest.FixtureRequest) -> None:
    if "student" in request.fixturenames:
        request.getfixturevalue("student").reset()


@asynccontextmanager
async def client_for(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0, timeout=10)
    try:
        yield client
    finally:
        await client.close()


async def ask(
    client: openai.AsyncOpenAI, messages: list[dict[str, Any]], stream: bool
) -> tuple[str, Any, int]:
    """Text, finish_reason and content-chunk count of one chat call, as the openai client decodes them."""
    if not stream:
        reply = await client.chat.completions.create(model="default_model", messages=messages)  # type: ignore[arg-type]
        choice = reply.choices[0]
        return choice.message.content or "", choice.finish_reason, 1
    events = await client.chat.completions.create(model="default_model", messages=messages, stream=True)  # type: ignore[arg-type]
    parts: list[str] = []
    finish = None
    async with events:
        async for chunk in events:
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
    return "".join(parts), finish, len(parts)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_known_conversation_gets_the_tables_reply_exactly(
    student: StudentServer, stream: bool
) -> None:
    async with client_for(student.url) as client:
        first = await ask(client, FIRST, stream)
        second = await ask(client, SECOND, stream)
    assert first[:2] == (REPLY1, "stop")
    assert second[:2] == (REPLY2, "length")  # the table's finish_reason, not a fixed "stop"
    if stream:
        assert first[2] == 5 and second[2] == 5  # really streamed, in the configured pieces
    stats = student.stats()
    assert [r["key"] for r in stats["requests"]] == [table_key(FIRST), table_key(SECOND)]
    assert [r["hit"] for r in stats["requests"]] == [True, True]
    assert stats["answered"] == [table_key(FIRST), table_key(SECOND)]


async def test_an_unknown_conversation_gets_the_default_reply(student: StudentServer) -> None:
    async with client_for(student.url) as client:
        whole = await ask(client, MISS, stream=False)
        streamed = await ask(client, MISS, stream=True)
        prefix = await ask(client, [SYSTEM], stream=False)  # a prefix of a known conversation is not it
    assert whole[:2] == streamed[:2] == prefix[:2] == ("I don't know.", "stop")
    stats = student.stats()
    assert (stats["hits"], stats["misses"]) == (0, 3)
    assert stats["requests"][0]["key"] == table_key(MISS)


async def test_a_miss_is_http_404_when_there_is_no_default_reply(tmp_path: Path) -> None:
    table = tmp_path / "table.json"  # the .json form: one list of entries
    table.write_bytes(orjson.dumps(ENTRIES))
    with start_student_server(table, {"default_reply": None, "model": "tiny-student"}) as server:
        async with client_for(server.url) as client:
            models = await client.models.list()
            hit = await ask(client, FIRST, stream=False)
            with pytest.raises(openai.NotFoundError) as raised:
                await ask(client, MISS, stream=True)
        stats = server.stats()
    assert [m.id for m in models.data] == ["tiny-student"]
    assert hit[0] == REPLY1
    assert table_key(MISS) in str(raised.value)
    assert stats["outcomes"] == {"ok": 1, "not_found": 1}
    assert [r["hit"] for r in stats["requests"]] == [True, False]


async def test_models_lists_default_model_and_stats_record_what_was_sent(student: StudentServer) -> None:
    async with client_for(student.url) as client:
        models = await client.models.list()
        await client.chat.completions.create(
            model="default_model",
            messages=FIRST,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=64,
        )
        await client.chat.completions.create(
            model="other-model",
            messages=FIRST,  # type: ignore[arg-type]
            seed=7,
            n=1,
            response_format={"type": "json_object"},
        )
    assert [m.id for m in models.data] == ["default_model"]
    plain, loaded = student.stats()["requests"]
    assert plain["model"] == "default_model"
    assert (plain["seed"], plain["response_format"], plain["n"]) == (False, False, False)
    assert (plain["temperature"], plain["max_tokens"]) == (0.0, 64)
    assert loaded["model"] == "other-model"
    assert (loaded["seed"], loaded["response_format"], loaded["n"]) == (True, True, True)


def test_keys_are_the_exact_conversation() -> None:
    assert table_key(FIRST) != table_key(MISS)
    keys = {table_key(SECOND[:n]) for n in range(1, len(SECOND) + 1)}
    assert len(keys) == 4  # every multi-turn prefix is its own key
    swapped = [SYSTEM, {"role": "assistant", "content": USER1["content"]}]
    assert table_key(swapped) != table_key(FIRST)  # the role counts, not only the text
    # Canonical: key order and fields other than role and content do not change the key.
    reordered = [{"content": m["content"], "role": m["role"]} for m in FIRST]
    named = [SYSTEM, {**USER1, "name": "ann"}]
    assert table_key(reordered) == table_key(named) == table_key(FIRST)


@pytest.mark.parametrize("stream", [True, False])
async def test_the_projects_openai_teacher_talks_to_it(student: StudentServer, stream: bool) -> None:
    teacher = OpenAITeacher(student.url, stream=stream)
    task = plan_tasks(load_worlds(SEEDS_DIR), 1, 0, parse_mix("obedience=1"))[0]
    request = TeacherRequest(task.id, SECOND, max_tokens=32, temperature=0.0, est_tokens=64)
    try:
        reply = await teacher.complete(request, task, lambda: None)
    finally:
        await teacher.aclose()
    assert (reply.text, reply.finish_reason, reply.model) == (REPLY2, "length", "default_model")
    assert reply.completion_tokens > 0
    (sent,) = student.stats()["requests"]
    assert sent["model"] == "default_model"  # resolved from /v1/models
    assert (sent["seed"], sent["response_format"], sent["n"]) == (False, False, False)
    assert (sent["stream"], sent["include_usage"]) == (stream, stream)
    assert sent["hit"] and sent["key"] == table_key(SECOND)


async def test_injected_server_errors_reach_the_client() -> None:
    with start_student_server(ENTRIES, {"p_500": 1.0}) as server:
        async with client_for(server.url) as client:
            with pytest.raises(openai.InternalServerError):
                await ask(client, FIRST, stream=False)
        assert server.stats()["outcomes"] == {"http_500": 1}


def test_table_mistakes_name_the_file_and_line(tmp_path: Path) -> None:
    table = tmp_path / "table.jsonl"
    lines = [
        orjson.dumps(ENTRIES[0]),
        b"",
        orjson.dumps({"messages": FIRST, "reply": "another reply"}),
        orjson.dumps({"messages": FIRST, "reply": 3}),
        orjson.dumps({"messages": [], "reply": "x"}),
        orjson.dumps({"messages": FIRST, "reply": "x", "finish": "stop"}),
    ]
    table.write_bytes(b"\n".join(lines))
    with pytest.raises(ConfigError) as raised:
        start_student_server(table)
    message = str(raised.value)
    assert f"{table}:3: same messages as {table}:1" in message
    assert f"{table}:4: 'reply' must be a string" in message
    assert f"{table}:5: 'messages' must be a non-empty list" in message
    assert f"{table}:6: unknown keys ['finish']" in message
    table.write_text('{"messages": [\n')
    with pytest.raises(ConfigError, match=rf"{table}:1: not JSON"):
        start_student_server(table)
    with pytest.raises(ConfigError, match="cannot read the student table"):
        start_student_server(tmp_path / "missing.jsonl")
