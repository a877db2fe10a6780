"""One LoRA/DoRA training run through mlx_lm's Python API, writing everything to train/<name>/."""

from __future__ import annotations

import math
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import yaml
from mlx_lm.cli_ui import make_console
from mlx_lm.lora import train_model
from mlx_lm.tuner.datasets import CacheDataset, load_dataset
from mlx_lm.tuner.trainer import evaluate
from mlx_lm.utils import load, load_tokenizer

from factory.errors import TrainConfigError
from factory.train.plot import plot_losses
from factory.train.preflight import preflight
from factory.train.progress import TrainProgress

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
CONFIG_FILE = "train_config.yaml"  # the resolved config, as mlx_lm received it
SUMMARY_FILE = "summary.json"


@dataclass
class TrainResult:
    """What a finished run produced and measured."""

    out_dir: Path
    adapter_file: Path
    metrics_path: Path
    plot_path: Path
    first_val_loss: float | None
    final_val_loss: float | None
    test_loss: float | None
    tokens_per_second: float | None
    seconds: float
    reports: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures of the run (summary.json)."""
        return {
            "adapter_file": str(self.adapter_file),
            "first_val_loss": self.first_val_loss,
            "final_val_loss": self.final_val_loss,
            "test_loss": self.test_loss,
            "test_ppl": math.exp(self.test_loss) if self.test_loss is not None else None,
            "tokens_per_second": self.tokens_per_second,
            "seconds": round(self.seconds, 2),
        }


def _test_loss(config: dict[str, Any], model: Any, test_set: Any) -> float | None:
    """Loss on the test split, or None when it has fewer rows than one batch."""
    if len(test_set) < config["batch_size"]:
        return None
    model.eval()
    return float(
        evaluate(
            model=model,
            dataset=CacheDataset(test_set),
            batch_size=config["batch_size"],
            num_batches=config["test_batches"],
            max_seq_length=config["max_seq_length"],
        )
    )


def _mean_speed(train_reports: list[dict[str, Any]]) -> float | None:
    """Tokens per second over the whole run: all tokens over all training time (evals excluded)."""
    tokens, seconds, before = 0, 0.0, 0
    for report in train_reports:
        chunk = report["trained_tokens"] - before
        before = report["trained_tokens"]
        if report["tokens_per_second"] > 0:
            tokens += chunk
            seconds += chunk / report["tokens_per_second"]
    return tokens / seconds if seconds else None


def run_training(config: dict[str, Any], out_dir: Path) -> TrainResult:
    """Preflight the data, load the model, train, test, and write adapters, metrics and the plot.

    `config` is a validated mlx_lm config (mlx_config.yaml merged with flags); its `data` is the data
    folder and its `adapter_path` where adapters go (normally `out_dir`).
    """
    console = make_console()  # mlx_lm's console: our bar nests with its own instead of fighting it
    started = time.monotonic()

    tokenizer = load_tokenizer(config["model"])
    report = preflight(
        Path(config["data"]),
        tokenizer,
        batch_size=config["batch_size"],
        max_seq_length=config["max_seq_length"],
        mask_prompt=config["mask_prompt"],
    )
    report.render(console)

    out_dir.mkdir(parents=True, exist_ok=True)  # after preflight: a refused folder leaves no train/<name>/
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    np.random.seed(config["seed"])  # mlx_lm's run() seeds numpy too: batch order follows it
    model, tokenizer = load(config["model"])
    if config["num_layers"] > len(model.layers):
        raise TrainConfigError(
            f"num_layers is {config['num_layers']} but {config['model']} has {len(model.layers)} layers; "
            f"set num_layers to at most {len(model.layers)} (or -1 for all)"
        )
    args = types.SimpleNamespace(**{**config, "train": True, "test": True})
    train_set, valid_set, test_set = load_dataset(args, tokenizer)

    metrics_path = out_dir / METRICS_FILE
    with TrainProgress(metrics_path, config["iters"], console) as progress:
        train_model(args, model, train_set, valid_set, training_callback=progress)
    test_loss = _test_loss(config, model, test_set)
    mx.clear_cache()

    reports = progress.reports
    val = [r["val_loss"] for r in reports if r["type"] == "val"]
    train_reports = [r for r in reports if r["type"] == "train"]
    plot_path = plot_losses(
        reports, out_dir / PLOT_FILE, title=f"{Path(config['model']).name} · {out_dir.name}"
    )
    return TrainResult(
        out_dir=out_dir,
        adapter_file=Path(config["adapter_path"]) / "adapters.safetensors",
        metrics_path=metrics_path,
        plot_path=plot_path,
        first_val_loss=val[0] if val else None,
        final_val_loss=val[-1] if val else None,
        test_loss=test_loss,
        tokens_per_second=_mean_speed(train_reports),
        seconds=time.monotonic() - started,
        reports=reports,
    )
