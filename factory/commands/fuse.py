"""Fuse a training run's adapters into its base model (what mlx_lm.fuse does), for serving or eval."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from factory.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `factory fuse`'s flags."""
    parser.add_argument(
        "--adapter-path", required=True, help="a train/<name>/ folder (adapters + adapter_config.json)"
    )
    parser.add_argument("--model", help="base model (default: the one in adapter_config.json)")
    parser.add_argument("--save-path", help="where the fused model goes (default <adapter-path>/fused)")
    parser.add_argument("--dequantize", action="store_true", help="save full-precision weights")


def main(args: argparse.Namespace) -> int:
    """Fuse and print how to serve the result."""
    adapter_path = Path(args.adapter_path)
    if (
        not (adapter_path / "adapters.safetensors").exists()
        or not (adapter_path / "adapter_config.json").exists()
    ):
        raise ConfigError(f"{adapter_path} has no adapters.safetensors and adapter_config.json; train first")
    from factory.train.fuse import fuse

    save_path = fuse(
        adapter_path, Path(args.save_path or adapter_path / "fused"), args.model, args.dequantize
    )
    print(f"fused model written to {save_path}")
    print(f"serve it:  mlx_lm.server --model {shlex.quote(str(save_path))}")
    return 0
