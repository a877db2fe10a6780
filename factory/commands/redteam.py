"""Red-team a student: attack it, mutate what breaks it for R rounds, and train on the correct replies."""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from factory.defaults import DEFAULTS, resolve
from factory.errors import ConfigError

_KNOBS = ("rounds", "per_family", "mutants", "chain_max")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `factory redteam`'s flags."""
    parser.add_argument("--student", required=True, help="OpenAI-compatible URL (…/v1) or a model folder")
    parser.add_argument("--adapter", help="adapter folder for a model-folder student (train/<name>)")
    parser.add_argument(
        "--rounds", type=int, help=f"attack rounds, the first included (default {DEFAULTS['redteam_rounds']})"
    )
    parser.add_argument(
        "--families", help="comma-separated adversarial families (default: every adversarial family)"
    )
    parser.add_argument(
        "--per-family",
        type=int,
        help=f"attacks planned per family in round 0 (default {DEFAULTS['redteam_per_family']})",
    )
    parser.add_argument(
        "--mutants",
        type=int,
        help=f"mutants per attack that broke the student, each later round "
        f"(default {DEFAULTS['redteam_mutants']})",
    )
    parser.add_argument(
        "--chain-max", type=int, help=f"most transforms per mutant (default {DEFAULTS['redteam_chain_max']})"
    )
    parser.add_argument("--run", help="run name under output/ (default redteam-<timestamp>)")
    parser.add_argument("--seed", type=int, help="seed of the plan and the mutations (default: from --run)")
    parser.add_argument("--output-dir", help=f"where runs go (default {DEFAULTS['output_dir']})")
    parser.add_argument("--seeds-dir", help="folder of state templates (default seeds/)")
    parser.add_argument(
        "--split-ratios", help=f"train,valid,test shares of the batch (default {DEFAULTS['split_ratios']})"
    )
    decoding = parser.add_argument_group("student decoding")
    decoding.add_argument("--max-tokens", type=int, help=f"per reply (default {DEFAULTS['eval_max_tokens']})")
    decoding.add_argument("--concurrency", type=int, help="server students: items in flight")
    decoding.add_argument("--batch-size", type=int, help="model-folder students: items per generation batch")
    decoding.add_argument("--model", help="model name sent to a server (default default_model)")
    teacher = parser.add_argument_group("teacher (paraphrase mutants and the batch's correct replies)")
    teacher.add_argument(
        "--teacher",
        help="'builtin' (offline phrase banks, default) or an OpenAI-compatible base URL, "
        "e.g. http://127.0.0.1:8080/v1",
    )
    teacher.add_argument(
        "--teacher-model", help="model name (default: the first /v1/models lists; default_model for mlx_lm)"
    )
    teacher.add_argument("--teacher-api-key", help="API key (default: $OPENAI_API_KEY or a placeholder)")
    teacher.add_argument(
        "--teacher-concurrency",
        type=int,
        help=f"teacher requests in flight (default {DEFAULTS['redteam_teacher_concurrency']})",
    )


def settings(args: argparse.Namespace, run_name: str) -> dict[str, Any]:
    """The run's settings: flags over DEFAULTS; the seed from the run name unless given."""
    out: dict[str, Any] = {}
    for knob in _KNOBS:
        given = getattr(args, knob)
        value = DEFAULTS[f"redteam_{knob}"] if given is None else given
        least = 0 if knob == "mutants" else 1
        if value < least:
            raise ConfigError(f"--{knob.replace('_', '-')} must be at least {least}, got {value}")
        out[f"redteam_{knob}"] = value
    out["redteam_mutate_tries"] = DEFAULTS["redteam_mutate_tries"]
    seed = args.seed
    if seed is None:
        # A stable function of the name: a new run attacks anew, the same name repeats the same plan.
        seed = int(hashlib.sha256(run_name.encode()).hexdigest()[:8], 16)
    out["seed"] = seed
    return out


def teacher_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The URL teacher's settings (DEFAULTS with the --teacher flags), or None for the built-in teacher."""
    url = args.teacher or DEFAULTS["teacher"]
    if url == "builtin":
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--teacher must be 'builtin' or an http(s) base URL ending in /v1, got {url!r}")
    concurrency = args.teacher_concurrency
    if concurrency is None:
        concurrency = DEFAULTS["redteam_teacher_concurrency"]
    if concurrency < 1:
        raise ConfigError(f"--teacher-concurrency must be at least 1, got {concurrency}")
    return resolve(
        {
            "teacher": url,
            "model": args.teacher_model,
            "api_key": args.teacher_api_key,
            "concurrency": concurrency,
            "down_after": DEFAULTS["redteam_teacher_down_after"],
        }
    )


def _student(args: argparse.Namespace) -> Any:
    from factory.evaluate.students import make_student

    given: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.student.startswith(("http://", "https://")):
        given |= {"concurrency": args.concurrency, "model": args.model}
    else:
        given |= {"batch_size": args.batch_size}
    return make_student(args.student, args.adapter, **given)


def main(args: argparse.Namespace) -> int:
    """Run `factory redteam`."""
    from factory.export import export_run, parse_ratios
    from factory.prompts import prompt_hashes
    from factory.redteam import plan_attacks, run_rounds, write_batch, write_report
    from factory.redteam.attacks import adversarial_families
    from factory.redteam.teacher import RedteamTeacher
    from factory.seeds import load_worlds

    run_name = args.run or time.strftime("redteam-%Y%m%d-%H%M%S")
    run_path = Path(args.output_dir or DEFAULTS["output_dir"]) / run_name
    if run_path.exists() and any(run_path.iterdir()):
        raise ConfigError(f"{run_path} already exists; a red-team run is written once: pick another --run")
    chosen = None if args.families is None else [n.strip() for n in args.families.split(",") if n.strip()]
    names = adversarial_families(chosen)
    config = settings(args, run_name)
    ratios = parse_ratios(args.split_ratios or DEFAULTS["split_ratios"])
    taught = teacher_settings(args)
    student = _student(args)
    worlds = load_worlds(args.seeds_dir or DEFAULTS["seeds_dir"])
    console = Console()
    first = plan_attacks(worlds, names, config["redteam_per_family"], config["seed"])
    teacher = None if taught is None else RedteamTeacher(taught)
    if teacher is not None:
        model = teacher.connect(first)  # before the student is asked anything: a missing teacher stops here
        console.print(
            f"teacher {teacher.name} ({model}): paraphrase mutants, correct replies", highlight=False
        )

    def show(result: Any) -> None:
        summary = result.summary()
        asr = summary["asr"]
        rate = "–" if asr["rate"] is None else f"{asr['rate']:.0%}"
        broke = ", ".join(summary["broke_families"]) or "none"
        made = ", ".join(f"{v['attacks']} {how}" for how, v in summary["how"].items())
        console.print(
            f"round {result.round}: {summary['broken']} of {summary['attacks']} attacks broke the student "
            f"(ASR {rate}, {summary['errors']} errors); families: {broke}; attacks: {made}",
            highlight=False,
        )

    results = run_rounds(
        student, first, config, console, show, None if teacher is None else teacher.paraphrase
    )
    replies = None
    if teacher is not None:
        broken = [outcome for result in results for outcome in result.broken]
        replies = teacher.replies(broken)
    header = {
        "run": run_name,
        "student": student.name,
        "teacher": "builtin" if teacher is None else teacher.name,
        "teacher_model": None if teacher is None else teacher.model,
        "adapter": args.adapter,
        "seed": config["seed"],
        "families_attacked": names,
        "rounds_planned": config["redteam_rounds"],
        "settings": {k: v for k, v in config.items() if k.startswith("redteam_")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    run_config = {
        **header,
        "command": "redteam",
        "mix": ",".join(f"{n}=1" for n in names),
        "teacher_kind": "builtin" if teacher is None else "openai",
        "model": None if teacher is None else teacher.model,
        "prompt_files": prompt_hashes(),
        "split_ratios": args.split_ratios or DEFAULTS["split_ratios"],
        "seeds_dir": args.seeds_dir or DEFAULTS["seeds_dir"],
    }
    batch = write_batch(run_path, results, student.name, run_config, replies)
    write_report(run_path, results, batch, header)
    console.print(f"report: {run_path / 'redteam.md'}", highlight=False)
    if batch["accepted"]:
        summary = export_run(run_path, ratios, seed=config["seed"])
        console.print(
            f"done: {batch['accepted']} correct dialogues in {run_path}/accepted.jsonl · "
            f"data in {summary.data_dir}",
            highlight=False,
        )
    else:
        console.print("no attack broke the student: nothing to train on", highlight=False)
    return 0
