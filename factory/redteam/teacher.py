"""The red team's URL teacher: paraphrase mutants between rounds, the batch's correct replies at the end.

The student's runner drives one event loop per round (anyio.run), so every teacher phase opens its
own client and Pool inside its own loop; `connect` probes the teacher and resolves its model once,
before round 0, so a teacher that is not there stops the run before the student is asked anything.
A teacher that fails later costs only what it was asked for: a paraphrase reply that cannot be used
leaves that parent with its transform mutants, a dialogue that cannot be used is a rejected record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from factory.attack_writer import Rejection
from factory.errors import FactoryError
from factory.generate import process_task
from factory.models import Task
from factory.novelty import AttackIndex
from factory.pool import Pool
from factory.redteam.attacks import Attack
from factory.redteam.loop import Outcome
from factory.redteam.output import Result
from factory.redteam.paraphrase import Job, index_attacks, paraphrase_round
from factory.teachers import make_teacher
from factory.teachers.base import Teacher

T = TypeVar("T")


def reply_task(attack: Attack) -> Task | None:
    """The task whose dialogue carries the attack's one user turn verbatim as its payload; None if multi-turn.

    A paraphrase mutant's payload already is its turn. A planned or transform attack's turn becomes
    the payload (a code-built payload lies inside it, so the format rule still finds that too).
    """
    if attack.task.user_turns != 1 or len(attack.item.user_turns) != 1:
        return None  # a payload is one user turn; the others the teacher would word anew
    turn = attack.item.user_turns[0]
    if attack.task.target.payload == turn:
        return attack.task
    return dataclasses.replace(attack.task, target=dataclasses.replace(attack.task.target, payload=turn))


class RedteamTeacher:
    """A URL teacher and the run's attack index, shared by every paraphrase round."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings  # DEFAULTS resolved with the --teacher flags (the pool's knobs too)
        self.index = AttackIndex(settings["dedup_threshold"])

    @property
    def name(self) -> str:
        """The teacher's base URL."""
        return str(self.settings["teacher"])

    @property
    def model(self) -> str | None:
        """The model asked for (resolved by `connect`)."""
        return self.settings["model"]

    def _run(self, work: Callable[[Pool, Teacher], Awaitable[T]]) -> T:
        """Run `work` with a fresh client and pool in an event loop of its own."""

        async def session() -> T:
            teacher = make_teacher(self.settings)
            try:
                async with Pool(teacher, self.settings) as pool:
                    return await work(pool, teacher)
            finally:
                await teacher.aclose()

        return anyio.run(session)

    def connect(self, first: list[Attack]) -> str:
        """Probe the teacher, resolve its model, and index round 0's attacks; return the model."""

        async def probe(_pool: Pool, teacher: Teacher) -> str:
            await teacher.probe()
            return await teacher.resolve_model()  # type: ignore[attr-defined, no-any-return]

        self.settings["model"] = self._run(probe)
        index_attacks(self.index, first)
        return str(self.settings["model"])

    def paraphrase(self, jobs: list[Job], round_: int, k: int) -> tuple[list[Attack], list[Rejection]]:
        """Round `round_`'s paraphrase mutants of the jobs, and the rewrites not kept."""
        return self._run(
            lambda pool, _teacher: paraphrase_round(pool, jobs, round_, k, self.index, self.settings)
        )

    def replies(self, outcomes: list[Outcome]) -> dict[str, Result]:
        """The teacher's (status, record) for each single-turn attack that broke the student, by attack id."""

        async def work(pool: Pool, teacher: Teacher) -> dict[str, Result]:
            out: dict[str, Result] = {}

            async def one(attack_id: str, task: Task) -> None:
                try:
                    out[attack_id] = await process_task(task, pool, teacher, self.settings)
                except FactoryError as exc:  # one unusable task costs its record, never the batch
                    reason = getattr(exc, "reason", type(exc).__name__)
                    out[attack_id] = ("rejected", {"id": task.id, "reason": reason, "detail": str(exc)})

            async with anyio.create_task_group() as group:
                for outcome in outcomes:
                    task = reply_task(outcome.attack)
                    if task is not None:
                        group.start_soon(one, outcome.attack.task.id, task)
            return out

        return self._run(work)
