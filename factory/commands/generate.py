"""Generate a dataset: plan tasks from seeds, ask the teacher, check, write output/<run>/."""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from factory import __version__
from factory.attack_writer import AttackSource
from factory.commands.common import add_teacher_arguments, settings_from_args
from factory.commands.export import add_holdout_argument, print_export
from factory.dedup import NearDupIndex
from factory.defaults import DEFAULTS
from factory.export import export_run, parse_ratios
from factory.generate import Runner, RunStats
from factory.holdout import parse_holdout
from factory.novelty import AttackIndex, AttackScreen
from factory.plan import Overlay, families, iter_tasks, parse_mix
from factory.progress import show_progress, summary_table
from factory.prompts import prompt_hashes
from factory.report import write_report
from factory.seeds import load_worlds
from factory.store import UNSET_MEANS, open_run, read_run_config
from factory.teachers import make_teacher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the generate flags."""
    parser.add_argument("--n", type=int, help=f"tasks to plan (default {DEFAULTS['n']})")
    parser.add_argument("--mix", help=f"proportions by kind or family (default {DEFAULTS['mix']!r})")
    parser.add_argument("--run", help="run name under output/; an existing run is resumed")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every run-making command shares (generate, adversarial): seed, folders, export, teacher."""
    parser.add_argument(
        "--seed", type=int, help="run seed; the same seed plans the same tasks (default: from the run name)"
    )
    parser.add_argument("--output-dir", help="where runs go (default output/)")
    parser.add_argument("--seeds-dir", help="folder of state templates (default seeds/)")
    parser.add_argument(
        "--split-ratios", help=f"train,valid,test shares (default {DEFAULTS['split_ratios']})"
    )
    add_holdout_argument(parser, "default: none; kept in run.json, so a resumed run exports the same way")
    parser.add_argument(
        "--transform-rate",
        type=float,
        help="share of attacks whose attack turn code runs through a random transform chain "
        f"(base64, homoglyphs, another language...; default {DEFAULTS['transform_rate']}, "
        f"adversarial {DEFAULTS['adversarial_transform_rate']})",
    )
    parser.add_argument(
        "--transforms", help="comma-separated transforms the chains are drawn from (default: all)"
    )
    add_teacher_arguments(parser)


# Young-generation GC threshold during a run (Python's default is 700). A run allocates hundreds of
# short-lived containers per task: with the defaults, collections took ~10 % of the process's CPU
# in bench/pool.py's 200ms_64slots; with this threshold and `lean_gc`'s freeze, ~4 %.
GC_YOUNG_THRESHOLD = 10_000


def event_loop_options() -> dict[str, Any]:
    """anyio backend options: uvloop when installed (less CPU per request, bench/pool.py), else asyncio."""
    if importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


@contextmanager
def lean_gc() -> Iterator[None]:
    """Collect garbage less often during a run, and never rescan what existed before it."""
    thresholds = gc.get_threshold()
    # Modules, seeds and the HTTP client live as long as the run: moved out of the full
    # collections, which otherwise rescan all of them (~75 ms each).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def run_config(settings: dict[str, Any], model: str) -> dict[str, Any]:
    """The run.json contents: every setting, the versions, and hashes of seeds and prompts."""
    hashes = prompt_hashes()
    return {
        **settings,
        "api_key": None,  # never write a key to disk
        "teacher_kind": "builtin" if settings["teacher"] == "builtin" else "openai",
        "model": model,
        "seeds_hash": _hash_files(list(Path(settings["seeds_dir"]).glob("*.yaml"))),
        "prompt_hash": hashlib.sha256("".join(sorted(hashes.values())).encode()).hexdigest()[:16],
        "prompt_files": hashes,
        "versions": {"factory": __version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _attack_source(settings: dict[str, Any]) -> AttackSource:
    """Teacher-written attacks, novel against every run in the output folder (this one's kept attacks too)."""
    index = AttackIndex(settings["dedup_threshold"])
    index.load_runs(Path(settings["output_dir"]))
    return AttackSource(index, settings)


async def generate_run(
    settings: dict[str, Any],
    run_name: str,
    console: Console,
    written_attacks: bool = False,
    screen: AttackScreen | None = None,
) -> tuple[RunStats, Path]:
    """Plan, generate, check and export one run (new or resumed); return its counters and folder.

    `written_attacks`: with a URL teacher, eligible attacks are written by the teacher first
    (factory.attack_writer); the built-in teacher keeps its phrase banks. `screen` rejects an
    attack that repeats one kept before it (factory.novelty), before the export.
    """
    worlds = load_worlds(settings["seeds_dir"])
    mix = parse_mix(settings["mix"])
    # Checked before any request, so a misspelt name does not surface only after the whole run.
    holdout = parse_holdout(settings["holdout"], families(), [world.name for world in worlds])
    Overlay.from_settings(settings)  # a bad --transform-rate or --transforms, before any request
    teacher = make_teacher(settings)
    try:
        model = teacher.model
        if settings["teacher"] != "builtin":
            await teacher.probe()
            model = await teacher.resolve_model()
        run = open_run(Path(settings["output_dir"]) / run_name, run_config(settings, model))
        # On resume the stored settings win, so the plan is the same one.
        n = run.config["n"]
        overlay = Overlay.from_settings({**UNSET_MEANS, **run.config})
        tasks = iter_tasks(worlds, n, run.config["seed"], mix, overlay=overlay)
        verb = "resuming" if run.resumed else "starting"
        console.print(
            f"{verb} run [bold]{run_name}[/] · {n} tasks · {len(run.finished)} already done · "
            f"teacher {teacher.name} ({model})",
            highlight=False,
        )
        dedup = NearDupIndex.for_run(settings["output_dir"], run_name, threshold=settings["dedup_threshold"])
        writer = written_attacks and settings["teacher"] != "builtin"
        source = _attack_source(settings) if writer else None
        prepare = source.prepare if source else None
        runner = Runner(run, teacher, settings, dedup, prepare=prepare, screen=screen)
        with lean_gc():
            async with anyio.create_task_group() as tg:
                tg.start_soon(show_progress, runner.stats, lambda: runner.pool, console)
                stats = await runner.run(tasks, n)
                tg.cancel_scope.cancel()
        report = write_report(run.path, stats)
        if report["accepted"] and not stats.interrupted:
            ratios = parse_ratios(settings["split_ratios"])
            summary = export_run(run.path, ratios, seed=run.config["seed"], holdout=holdout)
            print_export(summary, console)
        return stats, run.path
    finally:
        await teacher.aclose()


def main(args: argparse.Namespace) -> int:
    """Run `factory generate`."""
    run_name = args.run or time.strftime("run-%Y%m%d-%H%M%S")
    output_dir = args.output_dir or DEFAULTS["output_dir"]
    stored = read_run_config(Path(output_dir) / run_name)
    settings = settings_from_args(args, stored)
    if settings["seed"] is None:
        # A stable function of the name: a new run gets fresh data, the same name resumes the same plan.
        settings["seed"] = int(hashlib.sha256(run_name.encode()).hexdigest()[:8], 16)
    console = Console()
    stats, path = anyio.run(generate_run, settings, run_name, console, backend_options=event_loop_options())
    console.print(summary_table(stats, str(path)))
    resume = f"factory generate --run {run_name}"
    if stats.interrupted or stats.done < stats.total:
        console.print(f"stopped with {stats.total - stats.done} tasks left; resume with: {resume}")
        return 130 if stats.interrupted else 1
    console.print(f"done: {path}/accepted.jsonl · rerun {resume!r} to resume or extend with --n")
    sys.stdout.flush()
    return 0
