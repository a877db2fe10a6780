"""Validate one parsed template: every problem as "<file>: <key.path>: <what is wrong, what is expected>"."""

from __future__ import annotations

import re
import string
from typing import Any

from factory.seeds.nodes import NodeChecks, is_number, is_text, kind_of
from factory.seeds.syntax import (
    WILDCARD,
    generator_of,
    pattern_slots,
    resolve,
    split_template_path,
    substitute,
)

TOP_KEYS = (
    "world",
    "domain",
    "description",
    "trust_levels",
    "actions",
    "secrets",
    "askable",
    "benign_requests",
    "pools",
    "state",
)
OPTIONAL_TOP_KEYS = ("pools",)
WORLD_NAME = re.compile(r"[a-z][a-z0-9_]*")
MIN_SECRET_CHARS = 6
# Fields every expanded state must always have (besides the ones checked one by one below).
REQUIRED_ALWAYS = ("identity.name", "user.name", "secret_policy")


def validate_template(data: dict[str, Any], source: str) -> list[str]:
    """Return the problems of one parsed template file (an empty list when it is fine)."""
    return _Validator(source).run(data)


class _Validator(NodeChecks):
    """Collects problems while walking one template; every check adds to `problems` and goes on."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.pools: dict[str, Any] = {}
        self.path_refs: list[tuple[str, str, str]] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    def run(self, data: Any) -> list[str]:
        if not isinstance(data, dict):
            self.add("(top)", f"expected a mapping with keys {', '.join(TOP_KEYS)}, got {kind_of(data)}")
            return self.problems
        for key in data:
            if key not in TOP_KEYS:
                self.add(str(key), f"unknown top-level key; expected one of {', '.join(TOP_KEYS)}")
        for key in TOP_KEYS:
            if key not in data and key not in OPTIONAL_TOP_KEYS:
                self.add(key, "missing; every template needs it (see seeds/README.md)")
        self.check_header(data)
        if isinstance(data.get("pools"), dict):
            self.check_pools(data["pools"])
        elif "pools" in data:
            self.add(
                "pools", f"expected a mapping of pool name -> list of values, got {kind_of(data['pools'])}"
            )
        state = data.get("state")
        if "state" in data and not isinstance(state, dict):
            self.add(
                "state", f"expected a mapping (the tree that becomes the STATE JSON), got {kind_of(state)}"
            )
        elif isinstance(state, dict):
            self.check_node(state, "state")
            tree = substitute(state, self.pools, data)
            self.check_required(tree, data)
            self.check_path_refs(tree)
            self.check_secrets(tree, data.get("secrets"))
            self.check_askables(tree, data.get("askable"))
        return self.problems

    # --- header: names, trust levels, actions, requests ---

    def check_header(self, data: dict[str, Any]) -> None:
        name = data.get("world")
        if "world" in data and not (isinstance(name, str) and WORLD_NAME.fullmatch(name)):
            self.add("world", f"expected a snake_case id like 'clinic_front_desk', got {name!r}")
        for key in ("domain", "description"):
            if key in data and not is_text(data[key]):
                self.add(key, f"expected a non-empty string, got {data[key]!r}")
        self.check_names(data, "trust_levels", minimum=2)
        self.check_names(data, "benign_requests", minimum=1)
        actions = data.get("actions")
        if "actions" not in data:
            return
        if not isinstance(actions, dict):
            self.add(
                "actions",
                f"expected a mapping with 'allowed' and 'not_allowed' lists, got {kind_of(actions)}",
            )
            return
        for key in actions:
            if key not in ("allowed", "not_allowed"):
                self.add(f"actions.{key}", "unknown key; expected 'allowed' or 'not_allowed'")
        for key in ("allowed", "not_allowed"):
            if key not in actions:
                self.add(f"actions.{key}", "missing; expected a list of action names")
            else:
                self.check_names(actions, key, minimum=1, where=f"actions.{key}")
        allowed, denied = actions.get("allowed"), actions.get("not_allowed")
        if isinstance(allowed, list) and isinstance(denied, list):
            both = sorted(
                {a for a in allowed if isinstance(a, str)} & {d for d in denied if isinstance(d, str)}
            )
            if both:
                self.add("actions.not_allowed", f"actions both allowed and not allowed: {', '.join(both)}")

    def check_names(self, data: dict[str, Any], key: str, minimum: int, where: str | None = None) -> None:
        where = where or key
        if key not in data:
            return
        value = data[key]
        if not isinstance(value, list):
            self.add(where, f"expected a list of strings, got {kind_of(value)}")
            return
        if len(value) < minimum:
            self.add(where, f"expected at least {minimum} item(s), got {len(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not is_text(item):
                self.add(f"{where}[{i}]", f"expected a non-empty string, got {item!r}")
            elif item in seen:
                self.add(f"{where}[{i}]", f"duplicate {item!r}")
            else:
                seen.add(item)

    def check_pools(self, pools: dict[str, Any]) -> None:
        for name, values in pools.items():
            if not isinstance(values, list) or not values:
                self.add(f"pools.{name}", f"expected a non-empty list of values, got {values!r}")
                continue
            self.pools[name] = values
            for i, value in enumerate(values):
                self.check_node(value, f"pools.{name}[{i}]")

    # --- cross-checks on the whole tree ---

    def check_required(self, tree: dict[str, Any], data: dict[str, Any]) -> None:
        for path in REQUIRED_ALWAYS:
            nodes, always = resolve(tree, path.split("."))
            if not nodes or not always:
                self.add(f"state.{path}", "missing or optional; every state must always have this field")
        self.check_trust_level(tree, data.get("trust_levels"))
        allowed = (
            (data.get("actions") or {}).get("allowed") if isinstance(data.get("actions"), dict) else None
        )
        if tree.get("allowed_actions") != allowed:
            self.add(
                "state.allowed_actions",
                "expected the list of actions.allowed; write {$world: actions.allowed}",
            )
        if generator_of(tree.get("current_time")) != "$now":
            self.add("state.current_time", "expected {$now: {from, to, hours, zones}}")
        if generator_of(tree.get("timezone")) != "$timezone":
            self.add("state.timezone", "expected {$timezone: name} (the zone $now picked)")
        if not _has_list(tree):
            self.add("state", "expected at least one {$list: ...} (tasks, devices, orders, ...)")

    def check_trust_level(self, tree: dict[str, Any], levels: Any) -> None:
        nodes, always = resolve(tree, ["trust_level"])
        if not nodes or not always:
            self.add("state.trust_level", "missing or optional; expected {$choice: [...]} of trust_levels")
            return
        levels = levels if isinstance(levels, list) else []
        wrong = [n for n in nodes if not (isinstance(n, str) and n in levels)]
        if wrong:
            self.add(
                "state.trust_level",
                f"values must be trust_levels ({', '.join(map(str, levels))}), got {wrong!r}",
            )

    def check_path_refs(self, tree: dict[str, Any]) -> None:
        for gen, path, where in self.path_refs:
            nodes, _ = resolve(tree, split_template_path(path) or [])
            if gen == "$count":
                good = nodes and all(generator_of(n) == "$list" or isinstance(n, list) for n in nodes)
                expected = "a list"
            else:
                good = nodes and all(_numeric_node(n) for n in nodes)
                expected = "numbers ($int, $amount or number literals)"
            if not good:
                self.add(where, f"{path!r} must lead to {expected} in the state tree")

    def check_secrets(self, tree: dict[str, Any], secrets: Any) -> None:
        if not isinstance(secrets, list) or not secrets:
            if secrets is not None:
                self.add("secrets", f"expected a non-empty list of {{path, policy}}, got {secrets!r}")
            return
        seen: set[str] = set()
        for i, secret in enumerate(secrets):
            where = f"secrets[{i}]"
            if not isinstance(secret, dict) or set(secret) != {"path", "policy"}:
                self.add(where, f"expected a mapping with exactly path and policy, got {secret!r}")
                continue
            if not is_text(secret["policy"]):
                self.add(f"{where}.policy", "expected a non-empty string saying how the secret is protected")
            path = secret["path"]
            parts = split_template_path(path)
            if parts is None or WILDCARD in parts:
                self.add(f"{where}.path", f"expected a path like 'secrets.door_code' (no [*]), got {path!r}")
                continue
            if path in seen:
                self.add(f"{where}.path", f"duplicate secret path {path!r}")
            seen.add(path)
            nodes, always = resolve(tree, parts)
            if not nodes or not always:
                self.add(f"{where}.path", f"{path!r} must always be present in the state (not optional)")
            elif not all(_secret_node(n) for n in nodes):
                self.add(f"{where}.path", f"{path!r} must hold strings of {MIN_SECRET_CHARS}+ characters")

    def check_askables(self, tree: dict[str, Any], askables: Any) -> None:
        if not isinstance(askables, list) or not askables:
            if askables is not None:
                self.add("askable", f"expected a non-empty list of {{path, ask}}, got {askables!r}")
            return
        seen: set[str] = set()
        for i, entry in enumerate(askables):
            where = f"askable[{i}]"
            if not isinstance(entry, dict) or not {"path", "ask"} <= set(entry) <= {"path", "ask", "never"}:
                self.add(where, f"expected a mapping with path, ask and optionally never, got {entry!r}")
                continue
            path, never = entry["path"], entry.get("never", False)
            parts = split_template_path(path)
            if parts is None:
                self.add(
                    f"{where}.path",
                    f"expected a path like 'user.name' or 'pending_tasks[*].due', got {path!r}",
                )
                continue
            if path in seen:
                self.add(f"{where}.path", f"duplicate askable path {path!r}")
            seen.add(path)
            if not isinstance(never, bool):
                self.add(f"{where}.never", f"expected true or false, got {never!r}")
            exists = bool(resolve(tree, parts)[0])
            if never and exists:
                self.add(
                    f"{where}.path", f"{path!r} is in the state, but never: true says the world never has it"
                )
            elif not never and not exists:
                self.add(f"{where}.path", f"{path!r} is not in the state tree; fix it or mark it never: true")
            self.check_phrasings(tree, parts, entry["ask"], f"{where}.ask")

    def check_phrasings(self, tree: dict[str, Any], parts: list[str], ask: Any, where: str) -> None:
        if not isinstance(ask, list) or not ask:
            self.add(where, f"expected a non-empty list of phrasings, got {ask!r}")
            return
        keys: set[str] | None = None  # keys every item of the innermost [*] list always has
        if WILDCARD in parts:
            last = len(parts) - 1 - parts[::-1].index(WILDCARD)
            items, _ = resolve(tree, parts[: last + 1])
            keys = set.intersection(*(_always_keys(n) for n in items)) if items else set()
        for i, text in enumerate(ask):
            if not is_text(text):
                self.add(f"{where}[{i}]", f"expected a non-empty string, got {text!r}")
                continue
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
            except ValueError as exc:
                self.add(f"{where}[{i}]", f"bad placeholder ({exc}); write {{{{ and }}}} for literal braces")
                continue
            for name in names:
                if keys is None:
                    self.add(
                        f"{where}[{i}]",
                        f"placeholder {{{name}}} needs a [*] path (it names a list item field)",
                    )
                elif name not in keys:
                    allowed = ", ".join(sorted(keys)) or "none"
                    self.add(
                        f"{where}[{i}]",
                        f"placeholder {{{name}}} is not an always-present item field ({allowed})",
                    )


def _always_keys(node: Any) -> set[str]:
    if generator_of(node) is not None or not isinstance(node, dict):
        return set()
    return {k for k, v in node.items() if generator_of(v) != "$optional"}


def _has_list(node: Any) -> bool:
    if generator_of(node) == "$list":
        return True
    if isinstance(node, dict):
        return any(_has_list(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_list(v) for v in node)
    return False


def _numeric_node(node: Any) -> bool:
    return generator_of(node) in ("$int", "$amount", "$count", "$sum", "$mean") or is_number(node)


def _secret_node(node: Any) -> bool:
    if generator_of(node) == "$pattern":
        return isinstance(node["$pattern"], str) and len(pattern_slots(node["$pattern"])) >= MIN_SECRET_CHARS
    return isinstance(node, str) and len(node) >= MIN_SECRET_CHARS
