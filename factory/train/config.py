"""The training config: mlx_lm.lora's own keys, read and merged as mlx_lm does, then checked.

mlx_lm copies any unknown key into adapter_config.json without a word, so a typo like `rnak: 16`
trains with the default rank. Here every unknown key, at any depth, is an error naming its path and
the nearest valid key, and every bad value is reported, all problems at once.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlx.optimizers as optim
import yaml
from mlx_lm import lora as mlx_lora

from factory.errors import TrainConfigError
from factory.paths import PROJECT_ROOT

TRAIN_CONFIG = PROJECT_ROOT / "mlx_config.yaml"

# Valid keys come from mlx_lm itself, so a new mlx_lm key is accepted without editing this file.
TOP_KEYS = tuple(mlx_lora.CONFIG_DEFAULTS)
LORA_KEYS = ("rank", "scale", "dropout", "keys")  # linear_to_lora_layers reads these
SCHEDULE_KEYS = ("name", "arguments", "warmup", "warmup_init")  # tuner.utils.build_schedule reads these

POSITIVE_INTS = (
    "batch_size",
    "iters",
    "steps_per_report",
    "steps_per_eval",
    "save_every",
    "grad_accumulation_steps",
    "max_seq_length",
)
ALL_OR_POSITIVE_INTS = ("num_layers", "val_batches", "test_batches")  # -1 means "all" to mlx_lm
BOOLS = ("train", "test", "grad_checkpoint", "mask_prompt", "trust_remote_code")
STRINGS = ("model", "data", "adapter_path")
OPTIONAL_STRINGS = ("resume_adapter_file", "report_to", "project_name", "config")


def _parser_choices(dest: str) -> tuple[str, ...]:
    """The choices mlx_lm's own argparse flag allows for `dest`."""
    for action in mlx_lora.build_parser()._actions:
        if action.dest == dest and action.choices:
            return tuple(action.choices)
    raise LookupError(f"mlx_lm.lora has no --{dest} choices")  # an mlx_lm upgrade renamed the flag


FINE_TUNE_TYPES = _parser_choices("fine_tune_type")
OPTIMIZERS = _parser_choices("optimizer")


def _schedulers() -> dict[str, Callable[..., Any]]:
    """Schedules build_schedule can make: those whose first argument is the initial rate."""
    found = {}
    for name, fn in vars(optim.schedulers).items():
        if inspect.isfunction(fn) and fn.__module__ == optim.schedulers.__name__:
            params = list(inspect.signature(fn).parameters)
            if params and params[0] == "init":
                found[name] = fn
    return found


SCHEDULERS = _schedulers()


def _optimizer_params(name: str) -> tuple[str, ...]:
    """Keyword arguments the optimizer `name` takes, less the rate mlx_lm passes itself."""
    classes = {cls_name.lower(): cls for cls_name, cls in vars(optim).items() if inspect.isclass(cls)}
    params = inspect.signature(classes[name]).parameters
    return tuple(p for p in params if p not in ("self", "learning_rate"))


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config with mlx_lm's loader, so `1e-5` is a float exactly as mlx_lm reads it."""
    try:
        with path.open(encoding="utf-8") as fid:
            data = yaml.load(fid, mlx_lora.yaml_loader)
    except OSError as exc:
        raise TrainConfigError([f"{path}: cannot read ({exc.strerror}); pass an existing --config"]) from exc
    except yaml.YAMLError as exc:
        raise TrainConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainConfigError([f"{path}: must be a mapping of keys to values, not {type(data).__name__}"])
    return data


def load_train_config(path: Path | str = TRAIN_CONFIG, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read `path`, merge command line > YAML > mlx_lm's CONFIG_DEFAULTS, check it; raise TrainConfigError."""
    path = Path(path)
    from_file = read_yaml(path)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    problems = _unknown(from_file, str(path)) + _unknown(given, "command line")
    if problems:
        raise TrainConfigError(problems)
    # mlx_lm.lora.main's merge: a top-level key set to null falls through to the next source, and
    # nested mappings are replaced whole, not merged (so lora_parameters must give every key).
    config = copy.deepcopy(mlx_lora.CONFIG_DEFAULTS)
    config.update({k: v for k, v in from_file.items() if v is not None})
    planned_iters = config["iters"]
    config.update(copy.deepcopy(given))
    config["config"] = str(path)  # mlx_lm keeps --config in its args too
    _follow_overrides(config, given, planned_iters)
    problems = check_values(config)
    if problems:
        # Each message starts with the quoted key it is about: name where that key's value came from.
        top_key = [re.match(r"'([a-z_]+)", p).group(1) for p in problems]
        sources = ["command line" if key in given else str(path) for key in top_key]
        raise TrainConfigError([f"{source}: {p}" for source, p in zip(sources, problems, strict=True)])
    return config


def _follow_overrides(config: dict[str, Any], given: Mapping[str, Any], planned_iters: Any) -> None:
    """Keep the file's lr_schedule in step with a --learning-rate or --iters from the command line."""
    schedule = config.get("lr_schedule")
    if "lr_schedule" in given or not isinstance(schedule, dict):
        return
    arguments, warmup = schedule.get("arguments"), schedule.get("warmup", 0)
    fn = SCHEDULERS.get(str(schedule.get("name")))
    if not isinstance(arguments, list) or not arguments or fn is None:
        return  # check_values reports it
    schedule = {**schedule, "arguments": list(arguments)}
    # build_schedule takes the peak rate from arguments[0] and ignores learning_rate.
    if _is_number(given.get("learning_rate")):
        schedule["arguments"][0] = given["learning_rate"]
    iters = given.get("iters")
    if _is_int(iters) and iters > 0 and _is_int(planned_iters) and planned_iters > 0 and _is_int(warmup):
        # Keep the schedule's shape: warmup stays the same share of the run, decay covers the rest.
        schedule["warmup"] = warmup = min(round(warmup * iters / planned_iters), iters - 1)
        params = list(inspect.signature(fn).parameters)
        if "decay_steps" in params and params.index("decay_steps") < len(arguments):
            schedule["arguments"][params.index("decay_steps")] = max(1, iters - warmup)
    config["lr_schedule"] = schedule


def _unknown(config: Mapping[str, Any], source: str) -> list[str]:
    """One problem per key that mlx_lm would silently ignore, at any depth we know the keys of."""
    problems = _unknown_in(config, TOP_KEYS, "", source)
    if isinstance(lora := config.get("lora_parameters"), dict):
        problems += _unknown_in(lora, LORA_KEYS, "lora_parameters.", source)
    if isinstance(schedule := config.get("lr_schedule"), dict):
        problems += _unknown_in(schedule, SCHEDULE_KEYS, "lr_schedule.", source)
    if isinstance(opt_config := config.get("optimizer_config"), dict):
        problems += _unknown_in(opt_config, OPTIMIZERS, "optimizer_config.", source)
        for name, kwargs in opt_config.items():
            if name in OPTIMIZERS and isinstance(kwargs, dict):
                prefix = f"optimizer_config.{name}."
                problems += _unknown_in(kwargs, _optimizer_params(name), prefix, source)
    return problems


def _unknown_in(mapping: Mapping[str, Any], valid: tuple[str, ...], prefix: str, source: str) -> list[str]:
    problems = []
    for key in mapping:
        if key in valid:
            continue
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (valid: {', '.join(valid)})"
        problems.append(f"{source}: unknown key '{prefix}{key}'{hint}")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_values(config: Mapping[str, Any]) -> list[str]:
    """Every type and range problem in a merged config (empty when it is fine)."""
    problems = []
    for key in POSITIVE_INTS:
        if not (_is_int(config[key]) and config[key] > 0):
            problems.append(f"'{key}' must be a positive integer, got {_show(config[key])}")
    for key in ALL_OR_POSITIVE_INTS:
        if not (_is_int(config[key]) and (config[key] > 0 or config[key] == -1)):
            problems.append(f"'{key}' must be a positive integer or -1 (all), got {_show(config[key])}")
    if not (_is_int(config["seed"]) and config["seed"] >= 0):
        problems.append(f"'seed' must be an integer >= 0, got {_show(config['seed'])}")
    for key in BOOLS:
        if not isinstance(config[key], bool):
            problems.append(f"'{key}' must be true or false, got {_show(config[key])}")
    for key in STRINGS:
        if not (isinstance(config[key], str) and config[key]):
            problems.append(f"'{key}' must be a non-empty string, got {_show(config[key])}")
    for key in OPTIONAL_STRINGS:
        if config[key] is not None and not isinstance(config[key], str):
            problems.append(f"'{key}' must be a string or null, got {_show(config[key])}")
    for key, choices in (("fine_tune_type", FINE_TUNE_TYPES), ("optimizer", OPTIMIZERS)):
        if config[key] not in choices:
            problems.append(f"'{key}' must be one of {', '.join(choices)}, got {_show(config[key])}")
    if not (_is_number(config["learning_rate"]) and config["learning_rate"] > 0):
        hint = " (quoted? write 2e-5 without quotes)" if isinstance(config["learning_rate"], str) else ""
        problems.append(f"'learning_rate' must be a number > 0, got {_show(config['learning_rate'])}{hint}")
    if config["fine_tune_type"] != "full":
        problems += _check_lora(config["lora_parameters"])
    if config["lr_schedule"] is not None:
        problems += _check_schedule(config["lr_schedule"], config["learning_rate"], config["iters"])
    if not isinstance(config["optimizer_config"], dict):
        problems.append(f"'optimizer_config' must be a mapping, got {_show(config['optimizer_config'])}")
    return problems


def _check_lora(lora: Any) -> list[str]:
    if not isinstance(lora, dict):
        return [f"'lora_parameters' must be a mapping with rank, scale, dropout, got {_show(lora)}"]
    # mlx_lm replaces the whole mapping, so a file that sets only `rank` loses scale and dropout.
    problems = [f"'lora_parameters.{k}' is missing (mlx_lm needs it)" for k in LORA_KEYS[:3] if k not in lora]
    if "rank" in lora and not (_is_int(lora["rank"]) and lora["rank"] > 0):
        problems.append(f"'lora_parameters.rank' must be a positive integer, got {_show(lora['rank'])}")
    if "scale" in lora and not (_is_number(lora["scale"]) and lora["scale"] > 0):
        problems.append(f"'lora_parameters.scale' must be a number > 0, got {_show(lora['scale'])}")
    if "dropout" in lora and not (_is_number(lora["dropout"]) and 0 <= lora["dropout"] < 1):
        problems.append(f"'lora_parameters.dropout' must be in [0, 1), got {_show(lora['dropout'])}")
    keys = lora.get("keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        problems.append(f"'lora_parameters.keys' must be a list of module names, got {_show(keys)}")
    return problems


def _check_schedule(schedule: Any, learning_rate: Any, iters: Any) -> list[str]:
    if not isinstance(schedule, dict):
        return [f"'lr_schedule' must be a mapping with name and arguments, got {_show(schedule)}"]
    name, arguments = schedule.get("name"), schedule.get("arguments")
    if name not in SCHEDULERS:
        return [f"'lr_schedule.name' must be one of {', '.join(SCHEDULERS)}, got {_show(name)}"]
    fn = SCHEDULERS[name]
    if not (isinstance(arguments, list) and arguments and all(_is_number(a) for a in arguments)):
        return [f"'lr_schedule.arguments' must be a list of numbers for {name}{inspect.signature(fn)}"]
    problems = []
    try:
        inspect.signature(fn).bind(*arguments)
    except TypeError as exc:
        problems.append(
            f"'lr_schedule.arguments' {arguments} do not fit {name}{inspect.signature(fn)}: {exc}"
        )
    if _is_number(learning_rate) and arguments[0] != learning_rate:
        problems.append(
            f"'lr_schedule.arguments[0]' ({arguments[0]}) is the rate mlx_lm uses, but 'learning_rate' is "
            f"{learning_rate}: make them equal"
        )
    warmup = schedule.get("warmup", 0)
    if not (_is_int(warmup) and warmup >= 0):
        problems.append(f"'lr_schedule.warmup' must be an integer >= 0, got {_show(warmup)}")
    elif _is_int(iters) and 0 < iters <= warmup:
        problems.append(f"'lr_schedule.warmup' ({warmup}) must be below 'iters' ({iters})")
    warmup_init = schedule.get("warmup_init", 0.0)
    if not (_is_number(warmup_init) and warmup_init >= 0):
        problems.append(f"'lr_schedule.warmup_init' must be a number >= 0, got {_show(warmup_init)}")
    return problems
