"""Generate a fresh adversarial batch: attacks only, each novel against this batch and every earlier run."""

from __future__ import annotations

import argparse
import difflib
import hashlib
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from factory import attack_sources
from factory.commands.common import settings_from_args
from factory.commands.generate import add_run_arguments, event_loop_options, generate_run, lean_gc
from factory.defaults import DEFAULTS
from factory.errors import ConfigError
from factory.mix import families, parse_mix
from factory.novelty import NOVELTY_FILE, AttackScreen, novelty_markdown
from factory.progress import summary_table
from factory.report import add_section
from factory.store import read_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the adversarial flags."""
    parser.add_argument("--n", type=int, help=f"attack tasks to plan (default {DEFAULTS['n']})")
    parser.add_argument(
        "--families", help="comma-separated adversarial families (default: every adversarial family)"
    )
    parser.add_argument(
        "--run", help="run name under output/ (default adv-<timestamp>); an existing run is resumed"
    )
    parser.add_argument(
        "--written-attacks",
        action=argparse.BooleanOptionalAction,
        help="with a URL teacher, have it write each one-turn attack first, novel against every run, "
        "then the dialogue around it (default on; the built-in teacher uses its phrase banks)",
    )
    add_run_arguments(parser)


def adversarial_mix(names: str | None) -> str:
    """The --mix of the listed adversarial families (all of them when None), checked against the catalogue."""
    catalogue = families()
    attacks = [name for name, spec in catalogue.items() if spec.kind == "adversarial"]
    if names is None:
        return "adversarial=1"
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if not chosen:
        raise ConfigError(f"--families is empty; name one or more of: {', '.join(attacks)}")
    for name in chosen:
        if name in attacks:
            continue
        if name in catalogue:
            raise ConfigError(
                f"--families: {name!r} is a {catalogue[name].kind} family, not an attack; "
                f"adversarial families are: {', '.join(attacks)}"
            )
        near = difflib.get_close_matches(name, attacks, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"--families: unknown family {name!r}{hint} (adversarial families: {', '.join(attacks)})"
        )
    return ",".join(f"{name}=1" for name in dict.fromkeys(chosen))


def _settings(args: argparse.Namespace, run_name: str) -> dict[str, Any]:
    output_dir = args.output_dir or DEFAULTS["output_dir"]
    stored = read_run_config(Path(output_dir) / run_name)
    # A resumed run keeps its stored mix unless families are named (a changed mix is then an error).
    mix = adversarial_mix(args.families) if args.families or stored is None else None
    settings = settings_from_args(argparse.Namespace(**{**vars(args), "mix": mix}), stored)
    # A new batch's own defaults; a resumed one keeps what run.json says.
    if stored is None and args.transform_rate is None:
        settings["transform_rate"] = DEFAULTS["adversarial_transform_rate"]
    if stored is None and args.written_attacks is None:
        settings["written_attacks"] = DEFAULTS["adversarial_written_attacks"]
    catalogue = families()
    if any(catalogue[name].kind != "adversarial" for name in parse_mix(settings["mix"])):
        raise ConfigError(
            f"run {run_name!r} is not an adversarial run (its mix is {settings['mix']!r}); "
            "resume it with `factory generate`, or pick another --run name"
        )
    if settings["seed"] is None:
        # A stable function of the name: a new run gets fresh data, the same name resumes the same plan.
        settings["seed"] = int(hashlib.sha256(run_name.encode()).hexdigest()[:8], 16)
    return settings


def main(args: argparse.Namespace) -> int:
    """Run `factory adversarial`."""
    run_name = args.run or time.strftime("adv-%Y%m%d-%H%M%S")
    settings = _settings(args, run_name)
    console = Console()
    written = settings["written_attacks"]
    output_dir = Path(settings["output_dir"])
    # Attacks are screened as they are written, against this batch and every earlier run.
    screen = AttackScreen(output_dir, run_name, settings["dedup_threshold"])
    with lean_gc():
        stats, path = anyio.run(
            generate_run, settings, run_name, console, written, screen, backend_options=event_loop_options()
        )
    novelty = screen.finish()
    add_section(path, "novelty", novelty, novelty_markdown(novelty))
    origins = attack_sources.summarize(path)
    add_section(path, "attack_origins", origins, attack_sources.sources_markdown(origins))
    by_source = ", ".join(f"{name} {c['accepted']}" for name, c in origins["by_source"].items())
    console.print(f"attack origins (accepted): {by_source}", highlight=False)
    earlier = novelty["earlier"]
    console.print(
        f"novelty: {novelty['novel']} of {novelty['attacks']} attacks novel "
        f"({novelty['novelty_rate'] or 0:.1%}); {novelty['stale_inside']} repeated this batch, "
        f"{novelty['stale_across']} an earlier run ({earlier['attacks']} attacks in {earlier['runs']} "
        f"runs) → {path / NOVELTY_FILE}",
        highlight=False,
    )
    finished = not stats.interrupted and stats.done >= stats.total
    console.print(summary_table(stats, str(path)))
    resume = f"factory adversarial --run {run_name}"
    if not finished:
        console.print(f"stopped with {stats.total - stats.done} tasks left; resume with: {resume}")
        return 130 if stats.interrupted else 1
    console.print(f"done: {path}/accepted.jsonl · data in {path}/data")
    return 0
