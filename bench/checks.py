"""Benchmark the rule checks: dialogues checked per second on one core, with a task and without one.

Run from the project root:  .venv/bin/python bench/checks.py [--n 5000] [--seed 0] [--cpu N]

Plans n tasks over the project's worlds with the default mix, writes each with the built-in teacher,
and times `run_checks` over all of them in one process pinned to one CPU: once with the task (the
generation path) and once with task=None (foreign JSONL). The task=None pass runs on dialogues planned
with the next seed, so neither pass finds the other's values already in a cache. Each pass prints
its rate by the wall clock and by the process's CPU time (the two differ when other processes share
the CPU). Per-rule figures time `run_checks(..., rules=[name])`, so each includes the per-call setup
every rule shares.

The dialogues are built first and then frozen out of the garbage collector (`gc.freeze`): `factory
generate` checks each dialogue as it arrives and keeps few alive, so rescanning 2n held dialogues in
every collection would time the benchmark's own heap, not the checks.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.checks import RULES, run_checks  # noqa: E402
from factory.defaults import DEFAULTS  # noqa: E402
from factory.models import Message, Task  # noqa: E402
from factory.paths import SEEDS_DIR  # noqa: E402
from factory.plan import parse_mix, plan_tasks  # noqa: E402
from factory.seeds import load_worlds  # noqa: E402
from factory.state import render_state  # noqa: E402
from factory.teachers.builtin import write_turns  # noqa: E402

WARMUP = 50  # dialogues checked before timing: loads the lexicon and compiles the fixed patterns

Case = tuple[list[Message], Task]


def dialogues(n: int, seed: int) -> list[Case]:
    """n planned tasks with their built-in dialogues, the system message first."""
    tasks = plan_tasks(load_worlds(SEEDS_DIR), n, seed, parse_mix(DEFAULTS["mix"]))
    return [([{"role": "system", "content": render_state(t.state)}, *write_turns(t)], t) for t in tasks]


def timed(cases: list[Case], with_task: bool, rules: list[str] | None = None) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds to check every case, and how many violations were found."""
    found = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for messages, task in cases:
        found += len(run_checks(messages, task if with_task else None, task.state, rules))
    return time.perf_counter() - wall, time.process_time() - cpu, found


def report(label: str, cases: list[Case], with_task: bool) -> None:
    """Time all rules together, then each rule alone, and print the figures."""
    wall, cpu, found = timed(cases, with_task)
    n = len(cases)
    print(
        f"{label}: {n / wall:,.0f} dialogues/s ({wall / n * 1000:.3f} ms each), "
        f"by CPU time {n / cpu:,.0f}/s ({cpu / n * 1000:.3f} ms); {found} violations in {n} dialogues"
    )
    for name in RULES:
        seconds, _, _ = timed(cases, with_task, [name])
        print(f"  {name:<13} {seconds / n * 1000:.4f} ms")


def main() -> None:
    """Parse flags, build the dialogues, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="dialogues per pass (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="planning seed of the with-task pass")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = max(os.sched_getaffinity(0)) if args.cpu is None else args.cpu
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}")
    started = time.perf_counter()
    with_task = dialogues(args.n, args.seed)
    without = dialogues(args.n, args.seed + 1)
    warm = dialogues(WARMUP, args.seed + 2)
    print(f"planned and wrote {2 * args.n + WARMUP} dialogues in {time.perf_counter() - started:.1f} s")
    gc.collect()
    gc.freeze()
    timed(warm, True)
    timed(warm, False)
    report("with task", with_task, True)
    report("task=None", without, False)


if __name__ == "__main__":
    main()
