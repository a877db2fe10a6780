"""The planner: per task index a family, a world and a sample, turned into a Task by its builder."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import factory.plan.builders  # noqa: F401  (registers every builder)
from factory import attacks, seeds
from factory.errors import ConfigError
from factory.mix import families, iter_families
from factory.models import Task, World
from factory.plan.context import BUILDERS, SAMPLE_TRIES, Ctx, Expander, secret_values, task_id
from factory.plan.overlay import Overlay

# --- planning ---------------------------------------------------------------------------


def _sample_indices(seed: int, world: str, index: int) -> Iterator[int]:
    """The task's own sample first, then fallbacks far from any task's own index, fixed per task.

    Lazy: nearly every task takes its own sample, so the fallbacks' hash is rarely needed.
    """
    yield index
    base = int(task_id(seed, world, index)[:8], 16)
    for k in range(1, SAMPLE_TRIES):
        yield base + (1 << 32) * k


def _plan_one(worlds: list[World], index: int, seed: int, family: str, expand: Expander) -> Task:
    spec = families()[family]
    rotation = worlds[index % len(worlds) :] + worlds[: index % len(worlds)]
    hosts = [w for w in rotation if all(getattr(w, need) for need in spec.needs)]
    for world in hosts:
        tid = task_id(seed, world.name, index)
        for attempt, sample_index in enumerate(_sample_indices(seed, world.name, index)):
            sample = expand(world, seed, sample_index)
            rng = attacks.rng_for("task", seed, world.name, index, family, attempt)
            target = BUILDERS[family](Ctx(tid, world, sample, rng))
            if target is None:
                continue
            return Task(
                id=tid,
                kind=spec.kind,
                family=family,
                world=world.name,
                sample_index=sample_index,
                state=sample.state,
                expect=spec.expect,
                user_turns=rng.randint(*spec.user_turns),
                target=target,
                secrets=sorted(secret_values(world, sample.state)),
                allowed_actions=list(world.allowed_actions),
                trust_levels=list(world.trust_levels),
            )
    raise ConfigError(
        f"family {family!r} cannot be planned on any world ({', '.join(w.name for w in worlds)}): "
        f"it needs {', '.join(spec.needs) or 'a suitable state'}; give it weight 0 in --mix or add a world"
    )


def iter_tasks(
    worlds: list[World],
    n: int,
    seed: int,
    mix: dict[str, float],
    expand: Expander | None = None,
    overlay: Overlay | None = None,
) -> Iterator[Task]:
    """Plan tasks lazily, in index order: a long run holds only the tasks in flight in memory.

    Task i depends only on (worlds, seed, mix, overlay, i), so a longer run extends a shorter one.
    Bad arguments raise here, before the first task. `expand` defaults to factory.seeds.expand;
    `overlay` lays code transform chains over a share of the attacks (factory.plan.overlay).
    """
    if not worlds:
        raise ConfigError("no worlds to plan from: add state templates under seeds/")
    if n < 0:
        raise ConfigError(f"the number of tasks must be zero or more, got {n}")
    unknown = sorted(set(mix) - set(BUILDERS))
    if unknown:
        raise ConfigError(f"no planner for famil(ies) {', '.join(unknown)}; parse the mix with parse_mix()")
    ordered = sorted(worlds, key=lambda w: w.name)
    plan = islice(iter_families(mix, seed), n)
    expander = expand or seeds.expand
    tasks = (_plan_one(ordered, i, seed, family, expander) for i, family in enumerate(plan))
    return tasks if overlay is None else (overlay.apply(task, seed) for task in tasks)


def plan_tasks(
    worlds: list[World],
    n: int,
    seed: int,
    mix: dict[str, float],
    expand: Expander | None = None,
    overlay: Overlay | None = None,
) -> list[Task]:
    """Plan n tasks as a list (see iter_tasks)."""
    return list(iter_tasks(worlds, n, seed, mix, expand, overlay))
