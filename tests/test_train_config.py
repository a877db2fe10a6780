"""mlx_config.yaml: read as mlx_lm reads it, merged in its order, and every bad key or value named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlx_lm import lora as mlx_lora

from factory.errors import TrainConfigError
from factory.train.config import TRAIN_CONFIG, load_train_config


def _project_yaml() -> dict[str, Any]:
    return yaml.load(TRAIN_CONFIG.read_text(), mlx_lora.yaml_loader)


def _write(tmp_path: Path, config: dict[str, Any], name: str = "mlx_config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _mlx_lm_args(path: Path) -> dict[str, Any]:
    """What `mlx_lm.lora -c PATH` hands to its run(): its own parser, then main()'s merge."""
    args = vars(mlx_lora.build_parser().parse_args(["-c", str(path)]))
    for key, value in yaml.load(path.read_text(), mlx_lora.yaml_loader).items():
        if args.get(key) is None:
            args[key] = value
    for key, value in mlx_lora.CONFIG_DEFAULTS.items():
        if args.get(key) is None:
            args[key] = value
    return args


def _problems(path: Path, overrides: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(TrainConfigError) as caught:
        load_train_config(path, overrides)
    return caught.value.problems


def test_project_config_loads_exactly_as_mlx_lm_reads_it() -> None:
    config = load_train_config(TRAIN_CONFIG)
    assert config == _mlx_lm_args(TRAIN_CONFIG)
    # mlx_lm's float resolver: a bare 2e-5 is a float, not the string plain YAML 1.1 would give.
    assert isinstance(config["learning_rate"], float)
    assert config["lr_schedule"]["arguments"][0] == config["learning_rate"]
    assert config["model"] == "mlx-community/Qwen2.5-7B-Instruct-4bit"
    assert config["mask_prompt"] is True


def test_every_project_key_has_a_comment() -> None:
    for line in TRAIN_CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert " # " in line, f"mlx_config.yaml line without a reason: {line!r}"


def test_a_file_of_only_some_keys_falls_back_to_mlx_lm_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, {"iters": 30, "learning_rate": 1e-4, "lr_schedule": None})
    config = load_train_config(path)
    assert config == _mlx_lm_args(path)
    assert config["iters"] == 30
    assert config["batch_size"] == mlx_lora.CONFIG_DEFAULTS["batch_size"]


def test_top_level_typo_names_the_file_the_key_and_the_nearest_key(tmp_path: Path) -> None:
    config = _project_yaml()
    config["lerning_rate"] = config.pop("learning_rate")
    path = _write(tmp_path, config)
    assert _problems(path) == [f"{path}: unknown key 'lerning_rate' — did you mean 'learning_rate'?"]


def test_nested_typos_are_all_reported_with_their_path(tmp_path: Path) -> None:
    config = _project_yaml()
    config["lora_parameters"]["rnak"] = config["lora_parameters"].pop("rank")
    config["lr_schedule"]["warmpu"] = 10
    config["optimizer_config"] = {"adamw": {"weight_decy": 0.1}, "adamm": {}}
    path = _write(tmp_path, config)
    assert sorted(_problems(path)) == [
        f"{path}: unknown key '{key}' — did you mean '{hint}'?"
        for key, hint in [
            ("lora_parameters.rnak", "rank"),
            ("lr_schedule.warmpu", "warmup"),
            ("optimizer_config.adamm", "adam"),
            ("optimizer_config.adamw.weight_decy", "weight_decay"),
        ]
    ]


def test_a_key_with_no_near_match_lists_the_valid_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, {"lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0, "zzz": 1}})
    (problem,) = _problems(path)
    assert "unknown key 'lora_parameters.zzz' (valid: rank, scale, dropout, keys)" in problem


def test_bad_values_are_all_reported_together(tmp_path: Path) -> None:
    config = _project_yaml()
    config.update(
        fine_tune_type="qlora",
        batch_size=0,
        iters=-5,
        grad_checkpoint="yes",
        num_layers=0,
    )
    del config["learning_rate"]
    config["lora_parameters"]["dropout"] = 1.5
    config["lr_schedule"]["name"] = "cosine"
    path = _write(tmp_path, config)
    with path.open("a") as fid:
        fid.write('learning_rate: "2e-5"\n')  # quoted, so YAML makes it a string
    text = "\n".join(_problems(path))
    assert "'fine_tune_type' must be one of lora, dora, full, got 'qlora'" in text
    assert "'batch_size' must be a positive integer, got 0 (int)" in text
    assert "'iters' must be a positive integer, got -5 (int)" in text
    assert "'grad_checkpoint' must be true or false, got 'yes' (str)" in text
    assert "'learning_rate' must be a number > 0, got '2e-5' (str) (quoted?" in text
    assert "'num_layers' must be a positive integer or -1 (all), got 0 (int)" in text
    assert "'lora_parameters.dropout' must be in [0, 1), got 1.5 (float)" in text
    assert "'lr_schedule.name' must be one of" in text and "cosine_decay" in text
    assert all(line.startswith(f"{path}: ") for line in text.splitlines())


def test_a_partial_lora_parameters_mapping_is_refused(tmp_path: Path) -> None:
    # mlx_lm replaces the whole mapping, so this would crash on the missing scale after the model load.
    path = _write(tmp_path, {"lora_parameters": {"rank": 16}})
    problems = _problems(path)
    assert f"{path}: 'lora_parameters.scale' is missing (mlx_lm needs it)" in problems
    assert f"{path}: 'lora_parameters.dropout' is missing (mlx_lm needs it)" in problems


def test_schedule_must_match_learning_rate_and_its_function(tmp_path: Path) -> None:
    config = _project_yaml()
    config["learning_rate"] = 1e-4
    config["lr_schedule"]["arguments"] = [2e-5, 950, 2e-6, 7]
    path = _write(tmp_path, config)
    text = "\n".join(_problems(path))
    assert "'lr_schedule.arguments[0]' (2e-05) is the rate mlx_lm uses, but 'learning_rate' is 0.0001" in text
    assert "do not fit cosine_decay(init: float, decay_steps: int, end: float = 0.0)" in text


def test_overrides_win_over_the_file_and_none_means_not_given() -> None:
    config = load_train_config(TRAIN_CONFIG, {"batch_size": 1, "model": "/models/tiny", "seed": None})
    assert config["batch_size"] == 1
    assert config["model"] == "/models/tiny"
    assert config["seed"] == _project_yaml()["seed"]


def test_learning_rate_and_iters_overrides_reshape_the_schedule() -> None:
    planned = _project_yaml()
    config = load_train_config(TRAIN_CONFIG, {"learning_rate": 5e-5, "iters": 200})
    schedule = config["lr_schedule"]
    warmup = round(planned["lr_schedule"]["warmup"] * 200 / planned["iters"])
    assert schedule["warmup"] == warmup
    assert schedule["arguments"] == [5e-5, 200 - warmup, planned["lr_schedule"]["arguments"][2]]
    assert config["learning_rate"] == 5e-5


def test_unknown_and_bad_overrides_name_the_command_line(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    problems = _problems(path, {"batchsize": 2})
    assert problems == ["command line: unknown key 'batchsize' — did you mean 'batch_size'?"]
    assert _problems(path, {"max_seq_length": 0}) == [
        "command line: 'max_seq_length' must be a positive integer, got 0 (int)"
    ]


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert "cannot read" in _problems(missing)[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("iters: [1, 2\n")
    assert _problems(broken)[0].startswith(f"{broken}: not valid YAML")
    listing = tmp_path / "list.yaml"
    listing.write_text("- iters\n")
    assert _problems(listing) == [f"{listing}: must be a mapping of keys to values, not list"]
