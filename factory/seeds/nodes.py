"""Check the nodes of a state tree: literal values and every generator's own keys and ranges."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from factory.seeds.syntax import (
    GENERATORS,
    WILDCARD,
    WORLD_REFS,
    generator_of,
    is_generator,
    split_template_path,
    unwrap,
)

OFFSET = re.compile(r"[+-](0\d|1[0-4]):[0-5]\d")
TIMEZONE_FORMS = ("name", "offset", "label")


class NodeChecks:
    """Per-node checks; the subclass supplies `add(where, message)` and `pools`."""

    pools: dict[str, Any]
    # ($count | $sum | $mean, path, where): checked once the whole tree is known
    path_refs: list[tuple[str, str, str]]

    def add(self, where: str, message: str) -> None:
        """Record one problem at a key path."""
        raise NotImplementedError

    # --- the state tree ---

    def check_node(self, node: Any, where: str, in_mapping: bool = False) -> None:
        """Check one node and everything under it; `in_mapping` says it is the value of a key."""
        if is_generator(node):
            self.check_generator(node, where, in_mapping)
        elif isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    self.add(
                        f"{where}.{key}",
                        f"keys must be strings, YAML read {key!r} as {kind_of(key)}; quote it",
                    )
                self.check_node(value, f"{where}.{key}", in_mapping=True)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                self.check_node(item, f"{where}[{i}]")
        elif isinstance(node, dt.date | dt.datetime | dt.time):
            self.add(where, f"YAML read {node} as a date; quote it to keep it a string")
        elif not (node is None or isinstance(node, str | int | float | bool)):
            self.add(where, f"unsupported value of type {kind_of(node)}")

    def check_generator(self, node: dict[str, Any], where: str, in_mapping: bool) -> None:
        """Check a "$" mapping: a known generator, its own keys only, then its gen_* check."""
        gen = generator_of(node)
        if gen is None:
            keys = [k for k in node if isinstance(k, str) and k.startswith("$")]
            self.add(f"{where}.{keys[0]}", f"unknown generator; expected one of {', '.join(GENERATORS)}")
            return
        for key in node:
            if key != gen and key not in GENERATORS[gen]:
                extra = f" and {', '.join(sorted(GENERATORS[gen]))}" if GENERATORS[gen] else ""
                self.add(
                    f"{where}.{key}", f"unexpected key beside {gen}; this generator holds {gen}{extra} only"
                )
        getattr(self, "gen_" + gen[1:])(node[gen], f"{where}.{gen}", node, in_mapping)

    def gen_choice(self, value: Any, where: str, node: dict[str, Any], _: bool) -> None:
        if not isinstance(value, list) or not value:
            self.add(where, f"expected a non-empty list of options, got {value!r}")
            return
        for i, option in enumerate(value):
            self.check_node(option, f"{where}[{i}]")
        if "$weights" in node:
            weights = node["$weights"]
            good = isinstance(weights, list) and all(is_number(w) and w >= 0 for w in weights)
            if not good or len(weights) != len(value) or not sum(weights) > 0:
                self.add(
                    where.rsplit(".", 1)[0] + ".$weights",
                    f"expected {len(value)} numbers >= 0 (one per option, not all 0), got {weights!r}",
                )

    def gen_pool(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if value not in self.pools:
            known = ", ".join(self.pools) or "none defined"
            self.add(where, f"unknown pool {value!r}; expected a name under top-level 'pools' ({known})")

    def gen_int(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        self.check_range(value, where, ints=True)

    def gen_amount(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        self.check_range(value, where, ints=False)

    def gen_date(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        self.check_range(value, where, ints=True, unit="days from today ")

    def gen_bool(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if not (is_number(value) and 0 <= value <= 1):
            self.add(where, f"expected the probability of true, between 0 and 1, got {value!r}")

    def gen_pattern(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if not is_text(value):
            self.add(
                where,
                f"expected a string like 'ORD-#####' (# digit, @ A-Z, % a-z, \\ escapes), got {value!r}",
            )

    def gen_optional(self, value: Any, where: str, node: dict[str, Any], in_mapping: bool) -> None:
        if not (is_number(value) and 0 < value < 1):
            self.add(
                where, f"expected the probability of being present, strictly between 0 and 1, got {value!r}"
            )
        if not in_mapping:
            self.add(where, "$optional must be the value of a mapping key (not a list item or an option)")
        if "$value" not in node:
            self.add(
                where.rsplit(".", 1)[0] + ".$value", "missing; $optional needs the node to use when present"
            )
        else:
            self.check_node(node["$value"], where.rsplit(".", 1)[0] + ".$value")

    def gen_list(self, spec: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if not isinstance(spec, dict):
            self.add(where, f"expected a mapping with min, max and item, got {spec!r}")
            return
        for key in spec:
            if key not in ("min", "max", "item", "unique"):
                self.add(f"{where}.{key}", "unknown key; expected min, max, item or unique")
        low, high = spec.get("min"), spec.get("max")
        if not (is_int(low) and is_int(high) and 0 <= low <= high):
            self.add(where, f"expected integers 0 <= min <= max, got min={low!r}, max={high!r}")
        if "item" not in spec:
            self.add(f"{where}.item", "missing; expected the node each list item is made from")
        else:
            self.check_node(spec["item"], f"{where}.item")
        unique = spec.get("unique")
        if unique is not None and unique is not True:
            items, _ = unwrap(spec.get("item"))  # an item may be a $choice of mappings
            if not isinstance(unique, str):
                self.add(f"{where}.unique", f"expected true or a key of the item mapping, got {unique!r}")
            elif not all(isinstance(i, dict) and generator_of(i) is None and unique in i for i in items):
                self.add(f"{where}.unique", f"{unique!r} must be a key of every item mapping")

    def gen_now(self, spec: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if where != "state.current_time.$now":
            self.add(where, "$now is only allowed at state.current_time")
        if not isinstance(spec, dict):
            self.add(where, f"expected a mapping with from, to, hours and zones, got {spec!r}")
            return
        for key in spec:
            if key not in ("from", "to", "hours", "zones"):
                self.add(f"{where}.{key}", "unknown key; expected from, to, hours or zones")
        days = [as_day(spec.get(key)) for key in ("from", "to")]
        for key, day in zip(("from", "to"), days, strict=True):
            if day is None:
                self.add(f"{where}.{key}", f"expected a date YYYY-MM-DD, got {spec.get(key)!r}")
        if days[0] and days[1] and days[0] > days[1]:
            self.add(where, f"expected from <= to, got {days[0]} > {days[1]}")
        self.check_range(spec.get("hours"), f"{where}.hours", ints=True, bounds=(0, 23), unit="clock hours ")
        zones = spec.get("zones")
        if not isinstance(zones, dict) or not zones:
            self.add(
                f"{where}.zones",
                f"expected a mapping of zone name -> UTC offset like '+01:00', got {zones!r}",
            )
            return
        for name, offset in zones.items():
            if not (isinstance(offset, str) and OFFSET.fullmatch(offset)):
                self.add(
                    f"{where}.zones.{name}", f"expected a quoted UTC offset like '+05:30', got {offset!r}"
                )

    def gen_timezone(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if value not in TIMEZONE_FORMS:
            self.add(where, f"expected one of {', '.join(TIMEZONE_FORMS)}, got {value!r}")

    def gen_datetime(self, spec: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        units = [u for u in ("days", "hours", "minutes") if isinstance(spec, dict) and u in spec]
        if not isinstance(spec, dict) or len(units) != 1:
            self.add(
                where, f"expected a mapping with exactly one of days, hours, minutes (and at), got {spec!r}"
            )
            return
        for key in spec:
            if key not in ("days", "hours", "minutes", "at"):
                self.add(f"{where}.{key}", "unknown key; expected days, hours, minutes or at")
        self.check_range(spec[units[0]], f"{where}.{units[0]}", ints=True, unit=f"{units[0]} from now ")
        if "at" in spec:
            if units[0] != "days":
                self.add(f"{where}.at", "'at' (clock hours) only goes with 'days'")
            self.check_range(spec["at"], f"{where}.at", ints=True, bounds=(0, 23), unit="clock hours ")

    def gen_count(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        parts = split_template_path(value)
        if parts is None or WILDCARD in parts:
            self.add(where, f"expected the path of a list like 'pending_tasks', got {value!r}")
        else:
            self.path_refs.append(("$count", value, where))

    def gen_sum(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        parts = split_template_path(value)
        if parts is None or WILDCARD not in parts:
            self.add(where, f"expected the path of numbers in a list like 'orders[*].total', got {value!r}")
        else:
            self.path_refs.append(("$sum", value, where))

    def gen_mean(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        parts = split_template_path(value)
        if parts is None or WILDCARD not in parts:
            self.add(where, f"expected the path of numbers in a list like 'orders[*].total', got {value!r}")
        else:
            self.path_refs.append(("$mean", value, where))

    def gen_world(self, value: Any, where: str, _node: dict[str, Any], _: bool) -> None:
        if value not in WORLD_REFS:
            self.add(where, f"expected one of {', '.join(WORLD_REFS)}, got {value!r}")

    def check_range(
        self,
        value: Any,
        where: str,
        ints: bool,
        bounds: tuple[int, int] | None = None,
        unit: str = "",
    ) -> None:
        """Check a [low, high] pair of integers (or numbers), optionally within `bounds`."""
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(is_int(v) if ints else is_number(v) for v in value)
        )
        if ok and bounds:
            ok = bounds[0] <= value[0] and value[1] <= bounds[1]
        if not ok or value[0] > value[1]:
            kind = "integers" if ints else "numbers"
            limits = f" within [{bounds[0]}, {bounds[1]}]" if bounds else ""
            self.add(where, f"expected [low, high] {unit}({kind}{limits}) with low <= high, got {value!r}")


def as_day(value: Any) -> dt.date | None:
    """Return a YYYY-MM-DD string (or a YAML date) as a date, None when it is not one."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_text(value: Any) -> bool:
    """True for a string that is not blank."""
    return isinstance(value, str) and bool(value.strip())


def kind_of(value: Any) -> str:
    """The type name used in messages."""
    return type(value).__name__
