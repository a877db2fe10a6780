"""A tiny causal LM built offline that mlx_lm can load, LoRA-train, generate with and serve.

No model can be downloaded in tests or CI, so this writes one: a llama config, random weights made
by mlx_lm's own llama class, and a byte-level BPE tokenizer trained on text the factory itself
writes (built-in teacher dialogues and rendered STATE blocks), so token counts are realistic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
# Order fixes the ids: 0, 1, 2, ahead of the 256 byte tokens.
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)

# ChatML, as Qwen2.5 writes it, minus tools; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Model shapes: TINY for tests (build ~1 s, any step is instant), BENCH_35M for training benchmarks.
TINY: dict[str, int] = {
    "layers": 2,
    "hidden": 128,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 256,
    "vocab_size": 512,
}
BENCH_35M: dict[str, int] = {
    "layers": 8,
    "hidden": 512,
    "heads": 8,
    "kv_heads": 4,
    "intermediate": 2048,
    "vocab_size": 8192,
}
PRESETS: dict[str, dict[str, int]] = {"tiny": TINY, "bench_35m": BENCH_35M}
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

CORPUS_TASKS = 300  # built-in dialogues in the default corpus: ~600 KB, enough merges for an 8k vocab
CORPUS_SEED = 0
RMS_NORM_EPS = 1e-6
ROPE_THETA = 10000.0
MAX_POSITIONS = 4096


def parameter_count(
    *, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab_size: int
) -> int:
    """Parameters of the llama model build_tiny_model writes (tied embeddings, no biases)."""
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim  # q, o + k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    per_layer = attention + mlp + 2 * hidden  # two RMSNorm weights
    return vocab_size * hidden + layers * per_layer + hidden  # + final norm


def default_corpus(n_tasks: int = CORPUS_TASKS, seed: int = CORPUS_SEED) -> list[str]:
    """Text the factory writes: planned tasks' STATE system prompts and their built-in dialogues."""
    from factory.defaults import DEFAULTS
    from factory.paths import SEEDS_DIR
    from factory.plan import parse_mix, plan_tasks
    from factory.seeds import load_worlds
    from factory.state import render_state
    from factory.teachers.builtin import write_turns

    tasks = plan_tasks(load_worlds(SEEDS_DIR), n_tasks, seed, parse_mix(DEFAULTS["mix"]))
    texts: list[str] = []
    for task in tasks:
        texts.append(render_state(task.state))
        texts.extend(message["content"] for message in write_turns(task))
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` with the ChatML special tokens as ids 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte is in the vocabulary, so any text encodes even if the corpus never had it.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _config(shape: dict[str, int], eos_ids: list[int], pad_id: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": shape["hidden"],
        "num_hidden_layers": shape["layers"],
        "intermediate_size": shape["intermediate"],
        "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"],
        "vocab_size": shape["vocab_size"],
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": MAX_POSITIONS,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": None,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_tiny_model(
    path: Path,
    *,
    layers: int = TINY["layers"],
    hidden: int = TINY["hidden"],
    heads: int = TINY["heads"],
    kv_heads: int = TINY["kv_heads"],
    intermediate: int = TINY["intermediate"],
    vocab_size: int = TINY["vocab_size"],
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a random-weight llama model folder at `path` that `mlx_lm.load(str(path))` loads."""
    # mlx is imported here so importing factory.testing stays light where mlx is not installed.
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs

    shape = {
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "intermediate": intermediate,
        "vocab_size": vocab_size,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    # Every byte and special token gets an id whatever vocab_size says; the embedding must cover them.
    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB} (256 bytes + 3 special tokens), got {vocab_size}"
        )
    # A small corpus may yield fewer merges than asked: those ids are simply never produced.
    tokenizer = train_tokenizer(default_corpus() if corpus is None else corpus, vocab_size)
    tokenizer.save(str(path / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    eos_ids = [ids[IM_END], ids[END_OF_TEXT]]

    config = _config(shape, eos_ids, ids[END_OF_TEXT])
    _write_json(path / "config.json", config)
    _write_json(path / "tokenizer_config.json", _tokenizer_config())
    _write_json(
        path / "generation_config.json",
        {"bos_token_id": None, "eos_token_id": eos_ids, "pad_token_id": ids[END_OF_TEXT]},
    )

    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    return path


def write_random_adapter(model_path: Path, folder: Path, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter folder as mlx_lm.lora writes one, with random (non-zero) B so it changes outputs.

    LoRA starts with B = 0, which would make the adapter a no-op; a trained one is not.
    """
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten, tree_map_with_path
    from mlx_lm.tuner.utils import linear_to_lora_layers

    config = {
        "fine_tune_type": "lora",
        "num_layers": 2,
        "lora_parameters": {"rank": rank, "scale": 20.0, "dropout": 0.0},
    }
    model, _ = mlx_lm.load(str(model_path))
    model.freeze()
    linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"])
    mx.random.seed(seed)
    model.update(
        tree_map_with_path(
            lambda path, w: mx.random.normal(w.shape) * 0.05 if path.endswith("lora_b") else w,
            model.trainable_parameters(),
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(
        str(folder / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
    )
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def main(argv: list[str] | None = None) -> None:
    """`python -m factory.testing.tiny_model [PATH] [--preset NAME]`: build a model, or list the presets."""
    import argparse

    parser = argparse.ArgumentParser(description="Build a tiny random llama that mlx_lm loads offline.")
    parser.add_argument("path", nargs="?", help="folder to write (omit to list the presets)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.path is None:
        for name, shape in PRESETS.items():
            print(f"{name}: {parameter_count(**shape):,} parameters ({shape})")
        return
    shape = PRESETS[args.preset]
    build_tiny_model(Path(args.path), seed=args.seed, **shape)
    print(f"{args.preset} model ({parameter_count(**shape):,} parameters) written to {args.path}")


if __name__ == "__main__":
    main()
