"""Fuse trained adapters into the base model: a standalone model folder mlx_lm can load or serve."""

from __future__ import annotations

from pathlib import Path

import orjson
from mlx.utils import tree_unflatten
from mlx_lm.utils import dequantize_model, load, save


def base_model_of(adapter_path: Path) -> str:
    """The `model` recorded in the adapter folder's adapter_config.json."""
    config_file = adapter_path / "adapter_config.json"
    return orjson.loads(config_file.read_bytes())["model"]


def fuse(adapter_path: Path, save_path: Path, model: str | None = None, dequantize: bool = False) -> Path:
    """Load `model` (default: the adapters' base) with the adapters, fold them in, save to `save_path`."""
    model_id = model or base_model_of(adapter_path)
    loaded, tokenizer, config = load(model_id, adapter_path=str(adapter_path), return_config=True)
    # The same steps as mlx_lm.fuse: every LoRA/DoRA layer knows how to fold itself into a Linear.
    fused = [
        (name, module.fuse(dequantize=dequantize))
        for name, module in loaded.named_modules()
        if hasattr(module, "fuse")
    ]
    if fused:
        loaded.update_modules(tree_unflatten(fused))
    if dequantize:
        loaded = dequantize_model(loaded)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save(save_path, model_id, loaded, tokenizer, config, donate_model=False)
    return save_path
