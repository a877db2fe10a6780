"""The generation runner: planned tasks → pool → parse → checks → dedup → the run directory."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from factory.checkfile import plan_of, task_meta
from factory.checks import RULES, run_checks
from factory.dedup import NearDupIndex, dialogue_text
from factory.errors import FactoryError, TeacherReplyError
from factory.models import Task
from factory.novelty import AttackScreen
from factory.parse import parse_turns
from factory.pool import Pool, PoolError
from factory.prompts import estimate_tokens, render_request
from factory.state import render_state
from factory.store import RunDir, RunWriter
from factory.teachers.base import Teacher, TeacherRequest

Result = tuple[str, dict[str, Any]]  # ("accepted" | "rejected", record)
# A step before a task's dialogue is asked for: the task to ask for, and meta for its record.
Prepare = Callable[[Task, Pool], Awaitable[tuple[Task, dict[str, Any]]]]


@dataclass
class RunStats:
    """Live counters the progress display reads."""

    total: int = 0
    done: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    done_this_session: int = 0
    completion_tokens_this_session: int = 0
    stopping: bool = False
    interrupted: bool = False


def record_meta(task: Task, teacher: Teacher, prompt: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """A record's meta: what the task is, who wrote it with which prompt, its plan, and `extra`."""
    return {
        **task_meta(task),
        "transform": task.target.transform,
        "field": task.target.field,
        "teacher": teacher.name if teacher.name == "builtin" else "openai",
        "teacher_url": None if teacher.name == "builtin" else teacher.name,
        "model": teacher.model,
        "prompt_version": prompt.version,
        "prompt_hash": prompt.hash,
        "plan": plan_of(task),  # `factory check` rebuilds the exact task from it
        **extra,
    }


async def process_task(
    task: Task, pool: Pool, teacher: Teacher, settings: dict[str, Any], before: dict[str, Any] | None = None
) -> Result:
    """Ask the teacher for one task's dialogue, retrying unusable replies, and check it.

    `before` is meta from a step that ran before this one (a teacher-written attack): merged into
    the record's meta, its "usage" added to the record's, so a record counts every call it cost.
    """
    before = dict(before or {})
    prompt = render_request(task)
    request = TeacherRequest(
        task_id=task.id,
        messages=prompt.messages,
        max_tokens=settings["max_tokens"],
        temperature=settings["temperature"],
        est_tokens=estimate_tokens(prompt.messages, settings["max_tokens"]),
    )
    usage = {"prompt_tokens": 0, "completion_tokens": 0, **before.pop("usage", {})}
    failures: list[str] = []
    for attempt in range(1, settings["parse_attempts"] + 1):
        try:
            reply = await pool.complete(request, task)
        except PoolError as exc:
            meta = record_meta(task, teacher, prompt, {**before, "usage": usage, "attempts": attempt})
            return "rejected", {"id": task.id, "reason": exc.reason, "detail": exc.detail, "meta": meta}
        usage["prompt_tokens"] += reply.prompt_tokens
        usage["completion_tokens"] += reply.completion_tokens
        try:
            turns = parse_turns(reply.text, reply.finish_reason, task)
        except TeacherReplyError as exc:
            failures.append(str(exc))
            last_error, last_text = exc, reply.text
            continue
        messages = [{"role": "system", "content": render_state(task.state)}, *turns]
        violations = run_checks(messages, task, task.state)
        meta = record_meta(task, teacher, prompt, {**before, "usage": usage, "attempts": attempt})
        if violations:
            meta["violations"] = violations
            record = {"id": task.id, "reason": "checks", "detail": violations[0]["detail"], "meta": meta}
            return "rejected", {**record, "messages": messages}
        meta["checks"] = sorted(RULES)  # every rule this dialogue passed
        return "accepted", {"messages": messages, "meta": meta}
    meta = record_meta(
        task, teacher, prompt, {**before, "usage": usage, "attempts": settings["parse_attempts"]}
    )
    meta["failures"] = failures
    record = {"id": task.id, "reason": last_error.reason, "detail": last_error.detail, "meta": meta}
    return "rejected", {**record, "raw": last_text[-2000:]}


class Runner:
    """Runs the unfinished tasks of a run with one writer, graceful stop and resume."""

    def __init__(
        self,
        run: RunDir,
        teacher: Teacher,
        settings: dict[str, Any],
        dedup: NearDupIndex,
        prepare: Prepare | None = None,
        screen: AttackScreen | None = None,
    ):
        self.rundir = run
        self.prepare = prepare  # e.g. factory.attack_writer.AttackSource.prepare
        self.screen = screen  # attack novelty (factory adversarial): a stale attack is rejected
        self.teacher = teacher
        self.settings = settings
        self.dedup = dedup  # exact + near duplicates, this run's and every earlier run's
        self.stats = RunStats(accepted=run.counts["accepted"], rejected=run.counts["rejected"])
        self.pool: Pool | None = None
        self.error: FactoryError | None = None

    async def run(self, tasks: Iterable[Task], total: int) -> RunStats:
        """Process every task not yet in the ledger; return the final counters.

        `tasks` may be lazy (factory.plan.iter_tasks): it is consumed as workers free up.
        """
        todo: Iterable[Task] = (t for t in tasks if t.id not in self.rundir.finished)
        # Planning costs CPU the busy loop needs at high rates; plan a bounded head up front
        # and the (possibly huge) rest lazily, so memory stays flat on long runs.
        head = list(islice(todo, self.settings["plan_ahead"]))
        todo = chain(head, todo)
        self.stats.total = total
        self.stats.done = len(self.rundir.finished)
        writer = RunWriter(self.rundir, self.settings["flush_every"])
        self._writer_done = anyio.Event()
        self._feed_scope = anyio.CancelScope()
        task_send, task_receive = anyio.create_memory_object_stream[Task](0)
        result_send, result_receive = anyio.create_memory_object_stream[Result](256)
        try:
            async with Pool(self.teacher, self.settings) as pool, anyio.create_task_group() as outer:
                self.pool = pool
                outer.start_soon(self._write_results, result_receive, writer)
                outer.start_soon(self._flush_periodically, writer)
                async with anyio.create_task_group() as workers:
                    outer.start_soon(self._watch_signals, workers.cancel_scope)
                    workers.start_soon(self._feed, todo, task_send)
                    for _ in range(max(1, self.settings["concurrency"])):
                        workers.start_soon(self._work, task_receive.clone(), result_send.clone(), pool)
                    task_receive.close()
                    result_send.close()
                await self._writer_done.wait()
                outer.cancel_scope.cancel()
        finally:
            writer.close()
            self.dedup.save_run(self.rundir.path.parent, self.rundir.path.name)
        if self.error is not None:
            raise self.error
        return self.stats

    async def _feed(self, todo: Iterable[Task], send: MemoryObjectSendStream[Task]) -> None:
        with self._feed_scope:
            async with send:
                try:
                    for task in todo:
                        await send.send(task)
                except FactoryError as exc:
                    # A task that cannot be planned ends the run cleanly: in-flight work is kept.
                    self.error = exc

    async def _work(
        self,
        receive: MemoryObjectReceiveStream[Task],
        send: MemoryObjectSendStream[Result],
        pool: Pool,
    ) -> None:
        async with receive, send:
            async for task in receive:
                before: dict[str, Any] = {}
                if self.prepare is not None:
                    task, before = await self.prepare(task, pool)
                result = await process_task(task, pool, self.teacher, self.settings, before)
                await send.send(result)

    async def _write_results(self, receive: MemoryObjectReceiveStream[Result], writer: RunWriter) -> None:
        async with receive:
            async for status, record in receive:
                if status == "accepted":
                    status, record = self._screen(record)
                writer.write(status, record)
                self._count(status, record)
        writer.flush()
        self._writer_done.set()

    def _screen(self, record: dict[str, Any]) -> Result:
        """An accepted record as written: kept, or rejected as a stale attack or a near-duplicate."""
        stale = self.screen.find(record) if self.screen is not None else None
        if stale is not None:
            return "rejected", stale
        task_id = record["meta"]["id"]
        # The attack is indexed only once the whole dialogue is kept, so a rejected one blocks nothing.
        first = self.dedup.check_and_add(task_id, dialogue_text(record["messages"]))
        if first is None:
            if self.screen is not None:
                self.screen.add(record)
            return "accepted", record
        if self.screen is not None:
            self.screen.drop(record)
        return "rejected", {
            "id": task_id,
            "reason": "near_duplicate",
            "detail": f"repeats {first} (similarity >= {self.dedup.threshold})",
            "meta": record["meta"],
            "messages": record["messages"],
        }

    def _count(self, status: str, record: dict[str, Any]) -> None:
        self.stats.done += 1
        self.stats.done_this_session += 1
        usage = record["meta"].get("usage", {})
        self.stats.prompt_tokens += usage.get("prompt_tokens", 0)
        self.stats.completion_tokens += usage.get("completion_tokens", 0)
        self.stats.completion_tokens_this_session += usage.get("completion_tokens", 0)
        if status == "accepted":
            self.stats.accepted += 1
        else:
            self.stats.rejected += 1
            reason = record["reason"]
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    async def _flush_periodically(self, writer: RunWriter) -> None:
        while True:
            await anyio.sleep(self.settings["flush_interval"])
            writer.flush()

    async def _watch_signals(self, workers: CancelScope) -> None:
        # First signal: stop feeding and give in-flight tasks `grace` seconds; second: abandon them.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.stats.interrupted = True
                if self.stats.stopping:
                    workers.cancel()
                    return
                self.stats.stopping = True
                self._feed_scope.cancel()
                workers.deadline = anyio.current_time() + self.settings["grace"]
