"""Train the student: LoRA/DoRA on a run's data folder through mlx_lm, into train/<name>/."""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path
from typing import Any

import orjson

from factory.defaults import DEFAULTS
from factory.errors import ConfigError
from factory.paths import PROJECT_ROOT

# Flags that override mlx_config.yaml, under mlx_lm's own key names.
OVERRIDES = ("model", "iters", "fine_tune_type", "num_layers", "batch_size", "learning_rate",
             "max_seq_length", "seed", "adapter_path")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `factory train`'s flags."""
    parser.add_argument(
        "--config", help=f"training config in mlx_lm's keys (default {DEFAULTS['train_config']})"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="train on output/<RUN>/data (a run's exported data folder)")
    source.add_argument("--data", help="train on this mlx_lm data folder (train/valid[/test].jsonl)")
    parser.add_argument("--output-dir", help=f"where runs live (default {DEFAULTS['output_dir']})")
    parser.add_argument("--name", help="name of train/<name>/ (default: the run or data folder's name)")
    parser.add_argument("--train-dir", help=f"parent of train/<name>/ (default {DEFAULTS['train_dir']})")
    parser.add_argument("--overwrite", action="store_true", help="replace the adapters of train/<name>/")
    group = parser.add_argument_group("overrides of the config file")
    group.add_argument("--model", help="model path or Hugging Face id")
    group.add_argument("--iters", type=int)
    group.add_argument("--fine-tune-type", choices=["lora", "dora", "full"])
    group.add_argument("--num-layers", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--max-seq-length", type=int)
    group.add_argument("--seed", type=int)
    group.add_argument("--adapter-path", help="where adapters go (default train/<name>/)")


def config_path(given: str | None) -> Path:
    """The config file: as given, else ./mlx_config.yaml, else the project's own."""
    if given:
        return Path(given)
    local = Path(DEFAULTS["train_config"])
    return local if local.exists() else PROJECT_ROOT / DEFAULTS["train_config"]


def data_dir(args: argparse.Namespace) -> Path:
    """The data folder from --data or --run, checked to exist."""
    if args.data:
        path = Path(args.data)
    else:
        path = Path(args.output_dir or DEFAULTS["output_dir"]) / args.run / "data"
    if not path.is_dir():
        hint = "run `factory export RUN` or `factory generate` first" if args.run else "check the path"
        raise ConfigError(f"data folder {path} does not exist; {hint}")
    return path


def run_name(args: argparse.Namespace, data: Path) -> str:
    """train/<name>: --name, else the run's name, else the data folder's (its parent's if it is `data`)."""
    if args.name:
        return args.name
    if args.run:
        return args.run
    return data.resolve().parent.name if data.name == "data" else data.name


def main(args: argparse.Namespace) -> int:
    """Validate the config, preflight the data, train, and print where everything went."""
    from factory.train.config import load_train_config  # mlx_lm is only needed from here on

    data = data_dir(args)
    out_dir = Path(args.train_dir or DEFAULTS["train_dir"]) / run_name(args, data)
    overrides: dict[str, Any] = {key: getattr(args, key) for key in OVERRIDES}
    overrides["data"] = str(data)
    overrides["adapter_path"] = args.adapter_path or str(out_dir)
    config = load_train_config(config_path(args.config), overrides)
    adapters = Path(config["adapter_path"]) / "adapters.safetensors"
    if adapters.exists() and not args.overwrite:
        raise ConfigError(f"{adapters} exists; choose another --name or pass --overwrite")
    if args.overwrite:
        _clear_previous(out_dir, Path(config["adapter_path"]))

    from factory.train.environment import blas_warning
    from factory.train.runner import SUMMARY_FILE, run_training

    console = _console()
    if warning := blas_warning():
        console.print(f"[yellow]warning:[/yellow] {warning}")
    result = run_training(config, out_dir)
    (out_dir / SUMMARY_FILE).write_bytes(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2))
    _print_summary(console, config, result)
    return 0


def _clear_previous(out_dir: Path, adapter_dir: Path) -> None:
    """Remove what an earlier run wrote (adapters, checkpoints, logs, fused model), nothing else."""
    from factory.train.runner import CONFIG_FILE, METRICS_FILE, PLOT_FILE, SUMMARY_FILE

    stale = [*adapter_dir.glob("*adapters.safetensors"), adapter_dir / "adapter_config.json"]
    stale += [out_dir / name for name in (CONFIG_FILE, METRICS_FILE, PLOT_FILE, SUMMARY_FILE)]
    for path in stale:
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "fused", ignore_errors=True)  # a fused model of the old adapters would mislead


def _console() -> Any:
    from mlx_lm.cli_ui import make_console

    return make_console()


def _print_summary(console: Any, config: dict[str, Any], result: Any) -> None:
    summary = result.summary()
    loss = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(
        f"val loss {loss(summary['first_val_loss'])} → {loss(summary['final_val_loss'])} · "
        f"test loss {loss(summary['test_loss'])}"
        + (
            f" (ppl {summary['test_ppl']:.2f})"
            if summary["test_ppl"]
            else " (test split smaller than a batch)"
        )
        + f" · {summary['tokens_per_second'] or 0:,.0f} tok/s · {summary['seconds']:.0f} s",
        highlight=False,
    )
    model, adapters = shlex.quote(str(config["model"])), shlex.quote(str(config["adapter_path"]))
    console.print(f"wrote {result.out_dir}/ (adapters, adapter_config.json, metrics.jsonl, loss.png)")
    console.print(f"serve it:  mlx_lm.server --model {model} --adapter-path {adapters}", highlight=False)
    console.print(f"fuse it:   factory fuse --adapter-path {adapters}", highlight=False)
