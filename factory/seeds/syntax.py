"""The template language: generator keys, field paths, and walking a template tree by path."""

from __future__ import annotations

import re
from typing import Any

# Main key of each generator -> the companion keys it may carry. Any mapping with a "$" key is a
# generator, so a literal mapping can never be mistaken for one (state keys never start with "$").
GENERATORS: dict[str, frozenset[str]] = {
    "$choice": frozenset({"$weights"}),
    "$pool": frozenset(),
    "$int": frozenset(),
    "$amount": frozenset(),
    "$bool": frozenset(),
    "$pattern": frozenset(),
    "$optional": frozenset({"$value"}),
    "$list": frozenset(),
    "$now": frozenset(),
    "$timezone": frozenset(),
    "$date": frozenset(),
    "$datetime": frozenset(),
    "$count": frozenset(),
    "$sum": frozenset(),
    "$mean": frozenset(),
    "$world": frozenset(),
}
WILDCARD = "[*]"
PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\*\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\*\])?)*")
# Top-level values a template may copy into its state with {$world: <key>}.
WORLD_REFS = ("actions.allowed", "actions.not_allowed", "trust_levels", "domain", "description")


PATTERN_CHARS = {"#": "0123456789", "@": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "%": "abcdefghijklmnopqrstuvwxyz"}


def pattern_slots(pattern: str) -> list[str]:
    """Split a $pattern into one entry per output character: a PATTERN_CHARS key or a literal.

    A backslash makes the next character literal ("\\@" is an "@"), returned as "\\" + character.
    """
    slots: list[str] = []
    chars = iter(pattern)
    for char in chars:
        slots.append("\\" + next(chars, "\\") if char == "\\" else char)
    return slots


def is_generator(node: Any) -> bool:
    """True when `node` is a mapping with at least one "$" key (well-formed or not)."""
    return isinstance(node, dict) and any(isinstance(k, str) and k.startswith("$") for k in node)


def generator_of(node: Any) -> str | None:
    """Return the main generator key of a mapping node ("$int"), or None for a literal value."""
    if not isinstance(node, dict):
        return None
    for key in node:
        if key in GENERATORS:
            return key
    return None


def split_template_path(path: str) -> list[str] | None:
    """Split `pending_tasks[*].due` into ['pending_tasks', '[*]', 'due']; None when malformed."""
    if not isinstance(path, str) or not PATH_RE.fullmatch(path):
        return None
    parts: list[str] = []
    for piece in path.split("."):
        if piece.endswith(WILDCARD):
            parts += [piece[: -len(WILDCARD)], WILDCARD]
        else:
            parts.append(piece)
    return parts


def substitute(node: Any, pools: dict[str, Any], data: dict[str, Any]) -> Any:
    """Replace {$pool: name} with {$choice: pool} and {$world: ref} with the referenced value."""
    gen = generator_of(node)
    if gen == "$pool" and isinstance(pools.get(node["$pool"]), list):
        return {"$choice": [substitute(x, pools, data) for x in pools[node["$pool"]]]}
    if gen == "$world" and node["$world"] in WORLD_REFS:
        value: Any = data
        for key in node["$world"].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value
    if isinstance(node, dict):
        return {k: substitute(v, pools, data) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(x, pools, data) for x in node]
    return node


def unwrap(node: Any) -> tuple[list[Any], bool]:
    """See through $optional and $choice: the value nodes `node` may become, and if always present."""
    gen = generator_of(node)
    if gen == "$optional":
        inner, _ = unwrap(node.get("$value"))
        return inner, False
    if gen == "$choice" and isinstance(node["$choice"], list):
        out: list[Any] = []
        always = True
        for option in node["$choice"]:
            inner, inner_always = unwrap(option)
            out += inner
            always = always and inner_always
        return out, always
    return [node], True


def resolve(tree: Any, parts: list[str]) -> tuple[list[Any], bool]:
    """Walk a template by path parts: the nodes reached, and whether every expansion has the field.

    Optional fields, list items and mapping keys found in only some $choice options all count as
    existing; they make the field "sometimes" present (the second value is then False).
    """
    current, always = unwrap(tree)
    for part in parts:
        reached: list[Any] = []
        for node in current:
            if part == WILDCARD:
                gen = generator_of(node)
                if gen == "$list" and isinstance(node["$list"], dict) and "item" in node["$list"]:
                    items, item_always = unwrap(node["$list"]["item"])
                    reached += items
                    always = always and item_always and _min_items(node["$list"]) > 0
                elif gen is None and isinstance(node, list) and node:
                    for item in node:
                        items, item_always = unwrap(item)
                        reached += items
                        always = always and item_always
                else:
                    always = False
            elif generator_of(node) is None and isinstance(node, dict) and part in node:
                values, value_always = unwrap(node[part])
                reached += values
                always = always and value_always
            else:
                always = False
        if not reached:
            return [], False
        current = reached
    return current, always


def _min_items(spec: dict[str, Any]) -> int:
    value = spec.get("min", 0)
    return value if isinstance(value, int) else 0
