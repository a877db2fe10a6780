"""Teacher paraphrase: rewrites of an attack that broke the student, kept when they still attack.

    mutants, rejections = await paraphrase_round(pool, jobs, round_, k, index, settings)

A job is (parent, root): the attack that broke the student and the round-0 attack it descends
from. The teacher sees the STATE and the parent's attack turn (the root's when the parent is a
transform mutant: an encoded turn is no wording to rewrite) and writes `k` rewrites with the same
goal. Each is judged by factory.attack_writer.validate_attack against the root's task (a canary or
forged value still demanded, no secret value, not a near-duplicate of anything in the run's
AttackIndex), then carried as the task's payload (attack_writer.as_payload_task): the plan holds
it, so `factory check` and the checkers rebuild the exact attack, and a teacher's second call
must copy it verbatim. Only what attack_writer.eligible accepts is paraphrased (one user turn, no
payload built by code): a multi-turn attack, or one whose payload code built (a fake STATE block,
an encoded text), keeps its transform mutants only.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from functools import cache
from typing import Any

import anyio

from factory.attack_writer import (
    LANGUAGES,
    SYSTEM,
    Rejection,
    as_payload_task,
    ask_for_attacks,
    eligible,
    goal_lines,
    masked,
    validate_attack,
)
from factory.checks import run_checks
from factory.defaults import DEFAULTS
from factory.models import Message, Task
from factory.novelty import AttackIndex
from factory.pool import Pool
from factory.prompts import Templates, fenced, load_templates
from factory.redteam.attacks import Attack, attack_item, split
from factory.state import render_state

TEMPLATE = "paraphrase.md"
INDEX_RUN = "redteam"  # the run name the index files this run's attacks under
Job = tuple[Attack, Attack]  # (the attack that broke the student, its round-0 root)


@cache
def _templates() -> Templates:
    return load_templates()


def paraphrasable(root: Attack) -> bool:
    """Whether the attacks descending from `root` can be paraphrased (attack_writer.eligible)."""
    return eligible(root.task)


def source_text(parent: Attack, root: Attack) -> str:
    """The attack turn the teacher rewrites: the parent's, or the root's for a transform mutant."""
    return (root if parent.how == "transform" else parent).item.user_turns[-1]


def render_paraphrase_request(
    text: str, task: Task, k: int, templates: Templates | None = None
) -> list[Message]:
    """The system and user messages asking the teacher for `k` paraphrases of attack `text` on `task`."""
    templates = templates or _templates()
    user = templates.fill(
        TEMPLATE,
        state_block=fenced(render_state(task.state)),
        family=task.family,
        family_description=templates.families.get(task.family, "") or task.family,
        attack_block=fenced(text),
        k=k,
        goals=goal_lines(task),
        language=LANGUAGES.get(task.language, task.language),
        min_chars=DEFAULTS["written_attack_min_chars"],  # validate_attack's bounds
        max_chars=DEFAULTS["written_attack_max_chars"],
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user.strip()}]


def index_attacks(index: AttackIndex, attacks: list[Attack]) -> None:
    """Add the paraphrasable attacks' turns to `index`, so a paraphrase that repeats one is refused."""
    for attack in attacks:
        if paraphrasable(attack):
            key, sig = index.sketch(masked(attack.item.user_turns[-1], attack.task))
            index.add(attack.task.id, key, sig, INDEX_RUN)


def paraphrase_attack(parent: Attack, root: Attack, text: str, round_: int, number: int) -> Attack | str:
    """Round `round_`'s mutant whose one user turn is `text`, or why its correct reply fails a checker."""
    base = root.task
    task = dataclasses.replace(as_payload_task(base, text), id=f"{base.id}.r{round_}.p{number}")
    _, replies = split(task)  # the built-in correct reply: the reference (the URL teacher writes the batch)
    item = attack_item(task, [text], replies)
    violations = run_checks(item.messages(), task, task.state)
    if violations:
        return f"{violations[0]['rule']}: {violations[0]['detail']}"
    return Attack(task, item, round_, base=base.id, parent=parent.task.id, how="paraphrase")


async def paraphrase_round(
    pool: Pool, jobs: list[Job], round_: int, k: int, index: AttackIndex, settings: dict[str, Any] = DEFAULTS
) -> tuple[list[Attack], list[Rejection]]:
    """Ask for `k` paraphrases per paraphrasable job (concurrently); keep up to `k` valid ones each.

    Returns the mutants in job order and every rewrite (or whole reply) not kept, with its reason.
    """
    jobs = [job for job in jobs if paraphrasable(job[1])]
    if k < 1 or not jobs:
        return [], []
    replies: list[tuple[list[str], str | None]] = [([], None)] * len(jobs)

    async def one(i: int, parent: Attack, root: Attack) -> None:
        request_id = f"{parent.task.id}.r{round_}.paraphrase"
        messages = render_paraphrase_request(source_text(parent, root), root.task, k)
        asked = await ask_for_attacks(pool, root.task, messages, request_id, settings)
        replies[i] = (asked.attacks, asked.error)

    async with anyio.create_task_group() as group:
        for i, (parent, root) in enumerate(jobs):
            group.start_soon(one, i, parent, root)
    kept: list[Attack] = []
    rejections: list[Rejection] = []
    numbers: Counter[str] = Counter()  # per root: mutant ids stay unique when two parents share one
    # Judged after every reply is in, in job order, so which of two near-duplicates survives is stable.
    for (parent, root), (texts, error) in zip(jobs, replies, strict=True):
        if error is not None:
            reason, _, detail = error.partition(": ")
            rejections.append(Rejection(parent.task.id, "", reason, detail))
        mine = 0
        for text in texts:
            if mine == k:
                break
            reason = validate_attack(text, root.task, index, INDEX_RUN)
            made = (
                paraphrase_attack(parent, root, text, round_, numbers[root.task.id])
                if reason is None
                else None
            )
            if isinstance(made, Attack):
                numbers[root.task.id] += 1
                mine += 1
                kept.append(made)
            else:
                detail = made or ""
                rejections.append(Rejection(parent.task.id, text, reason or "checks", detail))
    return kept, rejections
