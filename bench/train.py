"""Benchmark training speed: tokens/s of `factory train` against the `mlx_lm.lora` command, same work.

Run from the project root:  .venv/bin/python bench/train.py [--iters 20] [--repeats 2] [--preset bench_35m]

1. Builds a random-weight llama model offline (factory/testing/tiny_model.py, ~35M parameters by
   default) and a data folder from a `factory generate --n 200` run with the built-in teacher.
2. Writes one mlx_lm config (BENCH_CONFIG below) and runs, as subprocesses with the same environment,
   `factory train --config … --data …` and `python -m mlx_lm lora --config … --train --data …`,
   `--repeats` times each. The first runner swaps every repeat (A B, B A, …) so slow drift in a shared
   machine's load weighs on both alike.
3. Both are measured with one definition: trained tokens over training time, summed over mlx_lm's
   train reports (each report gives the tokens since the last one and their tokens/s; evaluations are
   outside that time). factory's reports come from train/<name>/metrics.jsonl, mlx_lm's from its
   printed report table. "steady" leaves out the first report, which pays for kernel compilation;
   "best" is the fastest single report, the figure least disturbed by other work on a shared machine.

Prints per-run figures, the medians, the ratio factory / mlx_lm (target: >= 0.98), whether OpenBLAS
was preloaded (mlx's bundled CPU BLAS is 10-25x slower on Linux) and the load average around each run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.testing.tiny_model import PRESETS, build_tiny_model, parameter_count  # noqa: E402

OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")
DATA_TASKS = 200  # dialogues generated for the data folder (~190 train rows, ~20 valid)

# The one mlx_lm config both runners read; `iters` comes from --iters.
BENCH_CONFIG: dict[str, Any] = {
    "fine_tune_type": "lora",
    "num_layers": -1,  # every block: the most work per token, so the loop's overhead matters least
    "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
    "batch_size": 2,
    "max_seq_length": 512,  # most built-in dialogues fit; longer rows are truncated by both alike
    "mask_prompt": False,
    "learning_rate": 1e-4,
    "steps_per_report": 5,  # each report is one speed sample
    "steps_per_eval": 10_000,  # only the first and last evaluation: they are not training time anyway
    "val_batches": 1,
    "save_every": 10_000,
    "seed": 0,  # same batches in the same order for both runners
}

# A train row of mlx_lm's report table: iteration, loss and arrow, tokens/s, trained tokens in thousands.
MLX_REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+([\d.]+)k\s*$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def bench_env() -> tuple[dict[str, str], bool]:
    """The environment both runners get, and whether OpenBLAS is preloaded in it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    preloaded = str(OPENBLAS) in env.get("LD_PRELOAD", "")
    if not preloaded and OPENBLAS.exists():
        env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(OPENBLAS), env.get("LD_PRELOAD")]))
        preloaded = True
    return env, preloaded


def make_data(work: Path, env: dict[str, str]) -> Path:
    """A `factory generate --n 200` run's exported data folder (built-in teacher, offline)."""
    command = [sys.executable, "-m", "factory.cli", "generate", "--n", str(DATA_TASKS)]
    command += ["--run", "bench", "--output-dir", str(work / "runs")]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return work / "runs" / "bench" / "data"


class Report(NamedTuple):
    """One mlx_lm train report: cumulative trained tokens, tokens/s since the last one, train loss."""

    trained_tokens: int
    tokens_per_second: float
    train_loss: float


def speed(reports: list[Report], skip: int = 0) -> float:
    """Tokens/s over the reports: the tokens they trained over the training time they took."""
    tokens, seconds, before = 0, 0.0, 0
    for index, (trained, per_second, _) in enumerate(reports):
        chunk, before = trained - before, trained
        if index >= skip and per_second > 0:
            tokens += chunk
            seconds += chunk / per_second
    return tokens / seconds if seconds else float("nan")


def run_factory(config: Path, data: Path, out: Path, env: dict[str, str]) -> list[Report]:
    """Run `factory train` and return its train reports from metrics.jsonl."""
    command = [sys.executable, "-m", "factory.cli", "train", "--config", str(config), "--data", str(data)]
    command += ["--train-dir", str(out.parent), "--name", out.name]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr
        raise SystemExit(f"factory train failed ({result.returncode}):\n{output}")
    records = [orjson.loads(line) for line in (out / "metrics.jsonl").read_bytes().splitlines()]
    keys = ("trained_tokens", "tokens_per_second", "train_loss")
    return [Report(*(r[key] for key in keys)) for r in records if r["type"] == "train"]


def run_mlx_lm(config: Path, data: Path, out: Path, env: dict[str, str]) -> list[Report]:
    """Run `python -m mlx_lm lora --train` and return its train reports parsed from stdout."""
    command = [sys.executable, "-m", "mlx_lm", "lora", "--config", str(config), "--train"]
    command += ["--data", str(data), "--adapter-path", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr
        raise SystemExit(f"mlx_lm lora failed ({result.returncode}):\n{output}")
    reports = []
    for line in ANSI.sub("", result.stdout).splitlines():
        match = MLX_REPORT.match(line)
        if match:
            # The table rounds tokens to 0.1k; the error telescopes away in the summed chunks.
            tokens, per_second = round(float(match[4]) * 1000), float(match[3].replace(",", ""))
            reports.append(Report(tokens, per_second, float(match[2])))
    if not reports:
        raise SystemExit(f"no train reports found in mlx_lm's output:\n{result.stdout[-3000:]}")
    return reports


def load() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


SPEEDS = ("tokens_per_s", "steady_tokens_per_s", "best_tokens_per_s")


def figures_of(reports: list[Report], wall_s: float) -> dict[str, float]:
    """One run's figures: overall, steady and best tokens/s, trained tokens, final loss, wall seconds."""
    return {
        "tokens_per_s": speed(reports),
        "steady_tokens_per_s": speed(reports, skip=1),
        "best_tokens_per_s": max(r.tokens_per_second for r in reports[1:] or reports),
        "trained_tokens": reports[-1].trained_tokens,
        "final_loss": reports[-1].train_loss,
        "wall_s": wall_s,
    }


def describe(figures: dict[str, float]) -> str:
    """One line of a run's (or a median's) figures."""
    return (
        f"{figures['tokens_per_s']:6.1f} tok/s (steady {figures['steady_tokens_per_s']:6.1f}, "
        f"best {figures['best_tokens_per_s']:6.1f}) · {figures['trained_tokens']:.0f} tokens · "
        f"loss {figures['final_loss']:.3f} · "
        f"{figures['wall_s']:.0f} s wall"
    )


def run_alternately(
    config: Path, data: Path, work: Path, env: dict[str, str], repeats: int
) -> dict[str, list[dict[str, float]]]:
    """Run both trainers `repeats` times, swapping which goes first each time; print each run."""
    runners = {"factory": run_factory, "mlx_lm": run_mlx_lm}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            started, load_before = time.monotonic(), load()
            reports = runners[name](config, data, work / f"{name}_{repeat}", env)
            results[name].append(figures_of(reports, time.monotonic() - started))
            line = describe(results[name][-1])
            print(f"{name:>8} run {repeat + 1}: {line} · load {load_before} -> {load()}", flush=True)
    return results


def main() -> None:
    """Build model and data, run both trainers alternately, print figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="training steps per run (default 20)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each trainer (default 2)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="bench_35m", help="model shape")
    args = parser.parse_args()

    env, preloaded = bench_env()
    shape = PRESETS[args.preset]
    print(f"cpu cores: {os.cpu_count()} · load average (1/5/15 min): {load()}")
    print(f"OpenBLAS preloaded: {'yes' if preloaded else 'no (not installed: expect mlx CPU to be slow)'}")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "model", **shape)
        print(f"model: {args.preset}, {parameter_count(**shape):,} parameters")
        data = make_data(work, env)
        rows = {split: sum(1 for _ in (data / f"{split}.jsonl").open()) for split in ("train", "valid")}
        print(f"data: {rows['train']} train / {rows['valid']} valid rows")
        config = work / "bench_config.yaml"
        config.write_text(yaml.safe_dump({**BENCH_CONFIG, "model": str(model), "iters": args.iters}))
        print(f"config: {BENCH_CONFIG | {'iters': args.iters}}\n")

        results = run_alternately(config, data, work, env, args.repeats)

    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    print()
    for name, median in medians.items():
        print(f"median {name:>8}: {describe(median)}")
    # Same data, config and seed: both must train the same tokens to the same loss, or it is not one work.
    losses = {round(run["final_loss"], 3) for runs in results.values() for run in runs}
    print(f"same work (final train loss of every run): {'yes' if len(losses) == 1 else f'NO {losses}'}")
    ratios = {key: medians["factory"][key] / medians["mlx_lm"][key] for key in SPEEDS}
    print(
        f"ratio factory / mlx_lm: {ratios['tokens_per_s']:.3f} (steady {ratios['steady_tokens_per_s']:.3f}, "
        f"best {ratios['best_tokens_per_s']:.3f}; target >= 0.98)"
    )
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
