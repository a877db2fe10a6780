"""Read template files (YAML with line-numbered errors), validate them all, and build Worlds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from factory.errors import SeedError
from factory.models import Askable, Secret, World
from factory.seeds.syntax import substitute
from factory.seeds.validate import validate_template


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML silently resolves to the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in with "<<" may be overridden on purpose
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # unhashable keys are reported by construct_mapping below
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_template(path: Path, source: str) -> tuple[Any, list[str]]:
    """Parse one YAML file: (data, []) or (None, [problem naming the file and line])."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{source}: cannot read the file: {exc}"]
    try:
        return yaml.load(text, Loader=_StrictLoader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown line)"
        context = exc.context if exc.problem else None  # e.g. "while parsing a flow sequence"
        if context and exc.context_mark and exc.context_mark is not mark:
            context += f" started at line {exc.context_mark.line + 1}"
        detail = f"{exc.problem or exc.context}" + (f" ({context})" if context else "")
        return None, [f"{source}: {where}: YAML syntax error: {detail}"]
    except yaml.YAMLError as exc:
        return None, [f"{source}: YAML error: {exc}"]


def build_world(data: dict[str, Any], source: str) -> World:
    """Make a World from a template that passed validate_template ($pool and $world resolved)."""
    actions = data["actions"]
    return World(
        name=data["world"],
        domain=data["domain"],
        source=source,
        template=substitute(data["state"], data.get("pools") or {}, data),
        trust_levels=tuple(data["trust_levels"]),
        allowed_actions=tuple(actions["allowed"]),
        not_allowed_actions=tuple(actions["not_allowed"]),
        secrets=tuple(Secret(s["path"], s["policy"]) for s in data["secrets"]),
        askables=tuple(Askable(a["path"], tuple(a["ask"])) for a in data["askable"]),
        benign_requests=tuple(data["benign_requests"]),
    )


def load_worlds(directory: str | Path) -> list[World]:
    """Load and validate every *.yaml in `directory` (by file name); SeedError lists every problem found."""
    folder = Path(directory)
    if not folder.is_dir():
        raise SeedError([f"{folder}: not a folder; expected a folder of *.yaml state templates"])
    files = sorted(folder.glob("*.yaml"), key=lambda p: p.name)
    if not files:
        raise SeedError([f"{folder}: no *.yaml state templates found"])
    problems: list[str] = []
    worlds: list[World] = []
    first_source: dict[str, str] = {}
    for path in files:
        source = str(path)
        data, errors = read_template(path, source)
        errors = errors or validate_template(data, source)
        name = data.get("world") if isinstance(data, dict) else None
        if isinstance(name, str) and name in first_source:
            errors.append(f"{source}: world: duplicate world name {name!r} (also in {first_source[name]})")
        elif isinstance(name, str):
            first_source[name] = source
        problems += errors
        if not errors:
            worlds.append(build_world(data, source))
    if problems:
        raise SeedError(problems)
    return worlds
