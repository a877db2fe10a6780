"""`factory train` and `factory fuse` end to end on the tiny offline model, as a user runs them.

Training runs through the real CLI in a subprocess (so OpenBLAS can be preloaded, see conftest's
`mlx_env`); one trained run is shared by the tests that inspect its results. A random tiny model
learns format, not facts: the tests assert on loss and files, never on answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from cli_helpers import ROOT, factory_command, read_jsonl

from factory.train.environment import BLAS_HINT, OPENBLAS, openblas_loaded

mlx_lm = pytest.importorskip("mlx_lm")
mx = pytest.importorskip("mlx.core")
from mlx_lm.lora import CONFIG_DEFAULTS  # noqa: E402  (after the importorskip above)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ITERS = 30
# The measured config (README of issue #4): 30 iterations take ~10 s with OpenBLAS, ~23 s without.
# mask_prompt is off because generated rows are ~1000-2500 tokens: with max_seq_length 256 every
# answer lies past the cut, and preflight rightly refuses a run with nothing to train.
CONFIG: dict[str, Any] = {
    "fine_tune_type": "lora",
    "num_layers": -1,
    "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
    "optimizer": "adam",
    "batch_size": 4,
    "grad_accumulation_steps": 1,
    "grad_checkpoint": False,
    "mask_prompt": False,
    "learning_rate": 1.0e-3,
    "iters": ITERS,
    "max_seq_length": 256,
    "steps_per_report": 5,
    "steps_per_eval": 10,
    "val_batches": 2,
    "test_batches": 2,
    "save_every": 100,
    "seed": 0,
}
# A fixed chat, tokenized the same way for every logits comparison.
MESSAGES = [
    {"role": "system", "content": '== STATE ==\n{"user": {"plan": "pro"}}\n== END STATE =='},
    {"role": "user", "content": "Which plan am I on?"},
]


def factory(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the factory CLI in the repo as a user would, with `env` (LD_PRELOAD must reach the process)."""
    return subprocess.run(
        factory_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def write_config(path: Path, model: Path, **changes: Any) -> Path:
    """The test training config for `model`, with `changes` merged in at the top level."""
    path.write_text(yaml.safe_dump({"model": str(model), **CONFIG, **changes}, sort_keys=False))
    return path


def words(text: str) -> str:
    """Output with rich's line wrapping undone, so a long message can be matched whole."""
    return " ".join(text.split())


def without_preload(env: dict[str, str]) -> dict[str, str]:
    """`env` with no LD_PRELOAD: MLX on its bundled BLAS."""
    return {k: v for k, v in env.items() if k != "LD_PRELOAD"}


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory, mlx_env: dict[str, str]) -> Path:
    """`factory generate --n 200` with the built-in teacher: output/<run>/data is the training data."""
    out = tmp_path_factory.mktemp("output")
    result = factory("generate", "--n", "200", "--run", "r", "--output-dir", str(out), env=mlx_env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def weightless_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model without its weights: the tokenizer loads, the model cannot.

    A command that fails for the expected reason with this model proves it never loaded the model.
    """
    folder = tmp_path_factory.mktemp("weightless")
    for file in tiny_model.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder / file.name)
    return folder


@pytest.fixture(scope="module")
def trained(
    output_dir: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, mlx_env: dict[str, str]
) -> types.SimpleNamespace:
    """One real training run, `factory train --run r --iters 30`, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("train")
    config = write_config(root / "config.yaml", tiny_model)
    args = ("--run", "r", "--output-dir", str(output_dir), "--config", str(config))
    args += ("--iters", str(ITERS), "--train-dir", str(root), "--name", "student")
    result = factory("train", *args, env=mlx_env)
    return types.SimpleNamespace(result=result, dir=root / "student", args=args)


@pytest.fixture(scope="module")
def fused(trained: types.SimpleNamespace, tmp_path_factory: pytest.TempPathFactory, mlx_env: dict) -> Path:
    """`factory fuse` of the trained adapters into a standalone model folder."""
    save_path = tmp_path_factory.mktemp("fused") / "model"
    result = factory("fuse", "--adapter-path", str(trained.dir), "--save-path", str(save_path), env=mlx_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"mlx_lm.server --model {save_path}" in words(result.stdout)
    return save_path


def logits(model: Any, tokenizer: Any) -> Any:
    """The model's logits on the fixed chat, as float32 numpy."""
    tokens = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    return np.array(model(mx.array([tokens]))[0].astype(mx.float32))


# --- a full run --------------------------------------------------------------------------------------


def test_train_exits_0_and_writes_every_file(trained: types.SimpleNamespace) -> None:
    assert trained.result.returncode == 0, trained.result.stdout + trained.result.stderr
    for name in ("adapters.safetensors", "adapter_config.json", "train_config.yaml", "metrics.jsonl"):
        assert (trained.dir / name).stat().st_size > 0, name
    out = words(trained.result.stdout)
    assert "mlx_lm.server --model" in out and f"--adapter-path {trained.dir}" in out


def test_adapter_config_holds_the_config_and_no_unknown_key(trained: types.SimpleNamespace) -> None:
    saved = json.loads((trained.dir / "adapter_config.json").read_text())
    # mlx_lm reads this file back at load time: every key must be one it knows.
    assert set(saved) <= set(CONFIG_DEFAULTS), set(saved) - set(CONFIG_DEFAULTS)
    assert saved["lora_parameters"] == CONFIG["lora_parameters"]
    assert saved["num_layers"] == CONFIG["num_layers"]
    assert saved["iters"] == ITERS
    resolved = yaml.safe_load((trained.dir / "train_config.yaml").read_text())
    assert resolved["lora_parameters"]["rank"] == 8 and resolved["data"].endswith("r/data")


def test_metrics_hold_train_and_val_reports_in_order(trained: types.SimpleNamespace) -> None:
    reports = read_jsonl(trained.dir / "metrics.jsonl")
    train = [r for r in reports if r["type"] == "train"]
    val = [r for r in reports if r["type"] == "val"]
    # steps_per_report 5 over 30 iterations; a val report at the start, every 10 steps and the end.
    assert [r["iteration"] for r in train] == list(range(5, ITERS + 1, 5))
    val_iterations = [r["iteration"] for r in val]
    assert len(val) >= 3 and val_iterations == sorted(set(val_iterations))
    iterations = [r["iteration"] for r in reports]
    assert iterations == sorted(iterations)  # written as they happened
    assert all(r["tokens_per_second"] > 0 and r["train_loss"] > 0 for r in train)


def test_loss_plot_is_a_real_png(trained: types.SimpleNamespace) -> None:
    plot = (trained.dir / "loss.png").read_bytes()
    assert plot.startswith(PNG_MAGIC)
    assert len(plot) > 1024


def test_validation_loss_falls_and_test_loss_is_printed(trained: types.SimpleNamespace) -> None:
    summary = json.loads((trained.dir / "summary.json").read_text())
    assert summary["final_val_loss"] < summary["first_val_loss"]
    assert summary["test_loss"] is not None and summary["test_loss"] > 0
    assert f"test loss {summary['test_loss']:.3f}" in words(trained.result.stdout)


def test_adapters_load_with_mlx_lm_and_generate(trained: types.SimpleNamespace, tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model), adapter_path=str(trained.dir))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    text = mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=8)
    assert isinstance(text, str) and text


def test_fused_model_equals_base_plus_adapters(
    fused: Path, trained: types.SimpleNamespace, tiny_model: Path
) -> None:
    fused_model, fused_tokenizer = mlx_lm.load(str(fused))
    adapted, tokenizer = mlx_lm.load(str(tiny_model), adapter_path=str(trained.dir))
    base, _ = mlx_lm.load(str(tiny_model))
    want = logits(adapted, tokenizer)
    got = logits(fused_model, fused_tokenizer)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The adapters changed the model: otherwise the equality above would prove nothing.
    assert np.abs(logits(base, tokenizer) - want).max() > 1e-2


def test_a_second_run_into_the_same_name_needs_overwrite(
    trained: types.SimpleNamespace, mlx_env: dict[str, str]
) -> None:
    adapters = trained.dir / "adapters.safetensors"
    before = adapters.stat().st_mtime_ns
    result = factory("train", *trained.args, env=mlx_env)
    assert result.returncode == 2
    assert f"{adapters} exists" in words(result.stderr) and "--overwrite" in result.stderr
    assert adapters.stat().st_mtime_ns == before


# --- refusals before the model loads -----------------------------------------------------------------


def test_a_config_typo_is_refused_by_name_before_anything_loads(
    output_dir: Path, weightless_model: Path, tmp_path: Path, mlx_env: dict[str, str]
) -> None:
    config = write_config(
        tmp_path / "typo.yaml",
        weightless_model,
        lora_parameters={"rnak": 8, "scale": 20.0, "dropout": 0.0},
        learnig_rate=1e-3,
    )
    args = ("--run", "r", "--output-dir", str(output_dir), "--config", str(config))
    result = factory("train", *args, "--train-dir", str(tmp_path / "train"), env=mlx_env)
    assert result.returncode == 2, result.stdout + result.stderr
    err = words(result.stderr)
    assert "unknown key 'lora_parameters.rnak' — did you mean 'rank'?" in err
    assert "unknown key 'learnig_rate' — did you mean 'learning_rate'?" in err
    assert str(config) in err
    assert not (tmp_path / "train").exists()


def _break_valid(data: Path) -> str:
    """Keep 3 rows of valid.jsonl (batch_size is 4); return the expected reason."""
    valid = data / "valid.jsonl"
    valid.write_text("".join(valid.read_text(encoding="utf-8").splitlines(keepends=True)[:3]))
    return f"{valid}: 3 row(s) but batch_size is 4"


def _break_json(data: Path) -> str:
    """Cut line 7 of train.jsonl in half; return the expected reason."""
    train = data / "train.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[6] = lines[6][: len(lines[6]) // 2] + "\n"
    train.write_text("".join(lines))
    return f"{train}:7: not valid JSON"


@pytest.mark.parametrize("breakage", [_break_valid, _break_json], ids=["valid_below_batch", "bad_json"])
def test_a_data_folder_mlx_lm_would_reject_is_refused_before_the_model_loads(
    breakage: Any, output_dir: Path, weightless_model: Path, tmp_path: Path, mlx_env: dict[str, str]
) -> None:
    data = Path(shutil.copytree(output_dir / "r" / "data", tmp_path / "data"))
    reason = breakage(data)
    config = write_config(tmp_path / "config.yaml", weightless_model)
    train_dir = tmp_path / "train"
    args = ("--data", str(data), "--config", str(config), "--train-dir", str(train_dir))
    result = factory("train", *args, env=mlx_env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert reason in words(result.stderr)
    # The weights are missing: reaching the model load would have failed with another error.
    assert "safetensors" not in result.stderr
    assert not train_dir.exists()  # no half-made train/<name>/ to trip the next run's --overwrite check


# --- the Linux BLAS warning --------------------------------------------------------------------------


def test_openblas_is_found_in_a_maps_file(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    numpy_only = "7f00-7f01 r-xp 0 08:01 1 /venv/numpy.libs/libscipy_openblas64_-ff651d7f.so\n"
    maps.write_text(numpy_only)
    assert not openblas_loaded(maps)  # numpy's private copy does not speed up MLX
    maps.write_text(numpy_only + f"7f02-7f03 r-xp 0 08:01 2 {OPENBLAS}\n")
    assert openblas_loaded(maps)
    assert not openblas_loaded(tmp_path / "missing")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the warning is for Linux CPU only")
def test_blas_warning_follows_ld_preload(mlx_env: dict[str, str]) -> None:
    def warning_in(env: dict[str, str]) -> str:
        code = "from factory.train.environment import blas_warning; print(blas_warning())"
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert warning_in(without_preload(mlx_env)) == BLAS_HINT
    if not Path(OPENBLAS).exists():
        pytest.skip(f"{OPENBLAS} not installed: cannot check the preloaded case")
    assert warning_in({**mlx_env, "LD_PRELOAD": OPENBLAS}) == "None"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the warning is for Linux CPU only")
def test_factory_train_prints_the_blas_hint_only_without_openblas(
    output_dir: Path, tiny_model: Path, tmp_path: Path, mlx_env: dict[str, str]
) -> None:
    # A refused data folder stops the run right after the warning: the cheapest real `factory train`.
    data = Path(shutil.copytree(output_dir / "r" / "data", tmp_path / "data"))
    _break_valid(data)
    config = write_config(tmp_path / "config.yaml", tiny_model)
    args = ("train", "--data", str(data), "--config", str(config), "--train-dir", str(tmp_path / "train"))
    bare = factory(*args, env=without_preload(mlx_env))
    assert bare.returncode == 2
    assert "without OpenBLAS" in words(bare.stdout) and f"LD_PRELOAD={OPENBLAS}" in words(bare.stdout)
    if not Path(OPENBLAS).exists():
        pytest.skip(f"{OPENBLAS} not installed: cannot check the preloaded case")
    preloaded = factory(*args, env={**mlx_env, "LD_PRELOAD": OPENBLAS})
    assert preloaded.returncode == 2
    assert "OpenBLAS" not in preloaded.stdout + preloaded.stderr


# --- the one-command script --------------------------------------------------------------------------


@pytest.fixture
def mac_run_name() -> Iterator[str]:
    """A run name of this test's own; its output/ and train/ folders are removed afterwards."""
    name = f"pytest_train_mac_{os.getpid()}"
    yield name
    for parent in ("output", "train"):
        shutil.rmtree(ROOT / parent / name, ignore_errors=True)


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="train_mac.sh reuses the venv it is given")
def test_train_mac_script_generates_trains_fuses_and_prints_the_serve_command(
    mac_run_name: str, tiny_model: Path, tmp_path: Path, mlx_env: dict[str, str]
) -> None:
    config = write_config(tmp_path / "config.yaml", tiny_model)
    env = {**mlx_env, "VENV": sys.prefix, "CONFIG": str(config), "N": "60", "ITERS": "10"}
    result = subprocess.run(
        ["bash", str(ROOT / "train" / "train_mac.sh"), mac_run_name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (ROOT / "output" / mac_run_name / "data" / "train.jsonl").exists()
    assert (ROOT / "train" / mac_run_name / "adapters.safetensors").exists()
    fused = ROOT / "train" / mac_run_name / "fused"
    assert (fused / "config.json").exists() and list(fused.glob("*.safetensors"))
    assert f"mlx_lm.server --model train/{mac_run_name}/fused" in result.stdout
