"""The offline tiny model: mlx_lm loads it, renders ChatML, generates, and reads a chat data folder."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from factory.testing.tiny_model import (
    BENCH_35M,
    IM_END,
    IM_START,
    TINY,
    build_tiny_model,
    parameter_count,
)

mlx_lm = pytest.importorskip("mlx_lm")

MESSAGES = [
    {"role": "system", "content": '== STATE ==\n{"user": {"trust_level": "unverified"}}\n== END STATE =='},
    {"role": "user", "content": "What is my `trust_level`?"},
    {"role": "assistant", "content": "Your `trust_level` is unverified."},
]


def test_loads_with_mlx_lm_and_eos_is_im_end(tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model))
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.convert_tokens_to_ids(IM_END) in tokenizer.eos_token_ids
    assert model.args.model_type == "llama"
    assert len(model.layers) == TINY["layers"]


def test_chat_template_renders_chatml(tiny_model: Path) -> None:
    _, tokenizer = mlx_lm.load(str(tiny_model))
    text = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, tokenize=False)
    assert text == (
        f"{IM_START}system\n{MESSAGES[0]['content']}{IM_END}\n"
        f"{IM_START}user\n{MESSAGES[1]['content']}{IM_END}\n"
        f"{IM_START}assistant\n"
    )
    closed = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert closed.endswith(f"{IM_START}assistant\n{MESSAGES[2]['content']}{IM_END}\n")
    ids = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True)
    # The special markers are single ids, and the text round-trips through the byte-level BPE.
    assert ids.count(tokenizer.convert_tokens_to_ids(IM_START)) == 3
    assert tokenizer.decode(ids) == text


def test_loaded_tokenizer_matches_the_trained_one(tiny_model: Path) -> None:
    """transformers must use tokenizer.json as written, not rebuild a pre-tokenizer of its own."""
    from tokenizers import Tokenizer

    _, tokenizer = mlx_lm.load(str(tiny_model))
    raw = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    text = "Your `pending_tasks[1].due` is 2025-03-14 — not in STATE: café ☕"
    assert tokenizer.encode(text) == raw.encode(text).ids
    assert len(raw.encode("trust_level").ids) < len("trust_level")  # merges were learnt from the corpus


def test_generate_produces_tokens(tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model))
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True)
    steps = list(mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=8))
    assert 1 <= len(steps) <= 8
    assert steps[-1].finish_reason in ("stop", "length")
    assert steps[-1].generation_tokens == len(steps)


def test_preset_parameter_counts(tmp_path: Path) -> None:
    from mlx.utils import tree_flatten

    assert parameter_count(**TINY) == 361_088
    assert 34_000_000 < parameter_count(**BENCH_35M) < 37_000_000
    # The formula must agree with the weights actually written, on a shape unlike TINY's.
    shape = {**TINY, "layers": 3, "hidden": 96, "heads": 6, "kv_heads": 3, "vocab_size": 300}
    model, _ = mlx_lm.load(str(build_tiny_model(tmp_path / "m", **shape, corpus=["state obeys"] * 4)))
    assert sum(v.size for _, v in tree_flatten(model.parameters())) == parameter_count(**shape)


def test_same_seed_same_files_other_seed_other_weights(tmp_path: Path) -> None:
    corpus = [m["content"] for m in MESSAGES] * 20

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    a = files(build_tiny_model(tmp_path / "a", seed=3, corpus=corpus))
    b = files(build_tiny_model(tmp_path / "b", seed=3, corpus=corpus))
    c = files(build_tiny_model(tmp_path / "c", seed=4, corpus=corpus))
    assert a == b
    assert set(a) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]


def test_vocab_too_small_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be at least 259"):
        build_tiny_model(tmp_path / "m", vocab_size=200, corpus=["x"])


def test_chat_data_folder_loads_with_mlx_lm_loader(tiny_model: Path, tmp_path: Path) -> None:
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset

    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        rows = [{"messages": [*MESSAGES[:2], {**MESSAGES[2], "content": f"Reply {i}."}]} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _, tokenizer = mlx_lm.load(str(tiny_model))
    # The attributes mlx_lm.lora's argument parser gives load_dataset.
    args = types.SimpleNamespace(data=str(data), train=True, test=True, mask_prompt=True, hf_dataset=None)
    train, valid, test = load_dataset(args, tokenizer)
    assert (len(train), len(valid), len(test)) == (4, 2, 2)
    tokens, offset = CacheDataset(train)[1]
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], add_generation_prompt=True)
    assert tokens[:offset] == prompt  # --mask-prompt trains only what follows the prompt
    assert tokenizer.decode(tokens[offset:]) == f"Reply 1.{IM_END}\n"
