"""Turn worlds into Tasks: per index a family, a world, a state, and exactly what the example must show.

Everything is decided here, in code and deterministically from (seed, index), so the checkers can
verify the teacher's words against it. One builder per family (builders.py) fills the Target; a
builder returns None when its family cannot be shown on a sample, and the planner (planner.py) tries
another sample of the world.
"""

from factory.mix import FamilySpec, families, parse_mix
from factory.plan.context import BUILDERS, asks, secret_values, task_id
from factory.plan.overlay import Overlay
from factory.plan.planner import iter_tasks, plan_tasks

__all__ = [
    "BUILDERS",
    "FamilySpec",
    "Overlay",
    "asks",
    "families",
    "iter_tasks",
    "parse_mix",
    "plan_tasks",
    "secret_values",
    "task_id",
]
