"""Expand a validated world into concrete states, deterministically from (seed, world, index)."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any

from factory.errors import SeedError
from factory.models import Sample, World
from factory.seeds.syntax import PATTERN_CHARS, WILDCARD, generator_of, pattern_slots, split_template_path

UNIQUE_TRIES = 20  # redraws per list item before a `unique` list stops short
SLOT_MINUTES = (0, 15, 30, 45)  # appointments and due times land on quarter hours


def expand(world: World, seed: int, index: int) -> Sample:
    """Return the index-th concrete state of `world`, a pure function of (seed, world.name, index)."""
    digest = hashlib.sha256(f"{seed}:{world.name}:{index}".encode()).digest()
    expander = _Expander(world, random.Random(int.from_bytes(digest[:8], "big")))
    state = expander.mapping(world.template, "")
    state = expander.fill_deferred(state, state)
    return Sample(world=world, index=index, state=state, absent=tuple(expander.absent))


class _Deferred:
    """A $count, $sum or $mean value, computed once the rest of the state exists."""

    def __init__(self, gen: str, path: str):
        self.gen = gen
        self.path = path


class _Expander:
    """One expansion: the random stream, the drawn current time, and the optional paths left out."""

    def __init__(self, world: World, rng: random.Random):
        self.world = world
        self.rng = rng
        self.absent: list[str] = []
        # The clock is drawn first so that relative dates anywhere in the tree can use it.
        spec = world.template.get("current_time")
        self.now, self.zone = self.draw_now(spec["$now"]) if generator_of(spec) == "$now" else (None, "")

    def fail(self, path: str, message: str) -> SeedError:
        return SeedError([f"{self.world.source}: state.{path}: {message}"])

    def node(self, node: Any, path: str) -> Any:
        return self.value(node, generator_of(node), path)

    def value(self, node: Any, gen: str | None, path: str) -> Any:
        """Expand `node`, whose generator key (or None) the caller already looked up."""
        if gen is None:
            if isinstance(node, dict):
                return self.mapping(node, path)
            if isinstance(node, list):
                return [self.node(item, f"{path}[{i}]") for i, item in enumerate(node)]
            return node
        handler = _HANDLERS.get(gen)
        if handler is None:
            raise self.fail(path, f"{gen} cannot be expanded here; load worlds with load_worlds()")
        return handler(self, node, path)

    def mapping(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            child = f"{path}.{key}" if path else key
            gen = generator_of(value)
            if gen == "$optional":
                if self.rng.random() >= value["$optional"]:
                    self.absent.append(child)
                    continue
                value = value["$value"]
                gen = generator_of(value)
            out[key] = self.value(value, gen, child)
        return out

    # --- generators: one method each, named after the key ---

    def gen_choice(self, node: dict[str, Any], path: str) -> Any:
        options = node["$choice"]
        option = self.rng.choices(options, weights=node.get("$weights"))[0]
        return self.node(option, path)

    def gen_int(self, node: dict[str, Any], _: str) -> int:
        low, high = node["$int"]
        return self.rng.randint(low, high)

    def gen_amount(self, node: dict[str, Any], _: str) -> float:
        low, high = node["$amount"]
        return round(self.rng.uniform(low, high), 2)

    def gen_bool(self, node: dict[str, Any], _: str) -> bool:
        return self.rng.random() < node["$bool"]

    def gen_pattern(self, node: dict[str, Any], _: str) -> str:
        slots = pattern_slots(node["$pattern"])
        return "".join(self.rng.choice(PATTERN_CHARS[c]) if c in PATTERN_CHARS else c[-1] for c in slots)

    def gen_list(self, node: dict[str, Any], path: str) -> list[Any]:
        spec = node["$list"]
        unique = spec.get("unique")
        items: list[Any] = []
        seen: list[Any] = []
        for i in range(self.rng.randint(spec["min"], spec["max"])):
            for _ in range(UNIQUE_TRIES):
                mark = len(self.absent)
                item = self.node(spec["item"], f"{path}[{i}]")
                key = item if unique is True else item.get(unique) if isinstance(item, dict) else None
                if unique is None or key not in seen:
                    break
                del self.absent[mark:]  # this draw is thrown away, and so are its absences
            else:
                break
            seen.append(key)
            items.append(item)
        return items

    def draw_now(self, spec: dict[str, Any]) -> tuple[dt.datetime, str]:
        start, end = (_day(spec[k]) for k in ("from", "to"))
        day = start + dt.timedelta(days=self.rng.randint(0, (end - start).days))
        zone, offset = self.rng.choice(list(spec["zones"].items()))
        sign = -1 if offset.startswith("-") else 1
        hours, minutes = offset[1:].split(":")
        tz = dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes)))
        clock = dt.time(self.rng.randint(*spec["hours"]), self.rng.randint(0, 59), tzinfo=tz)
        return dt.datetime.combine(day, clock), zone

    def clock(self, path: str) -> dt.datetime:
        if self.now is None:
            raise self.fail(path, "relative dates need {$now: ...} at state.current_time")
        return self.now

    def gen_now(self, _node: dict[str, Any], path: str) -> str:
        return self.clock(path).isoformat()

    def gen_timezone(self, node: dict[str, Any], path: str) -> str:
        offset = self.clock(path).isoformat()[-6:]
        return {"name": self.zone, "offset": offset, "label": f"{self.zone} (UTC{offset})"}[node["$timezone"]]

    def gen_date(self, node: dict[str, Any], path: str) -> str:
        days = self.rng.randint(*node["$date"])
        return (self.clock(path).date() + dt.timedelta(days=days)).isoformat()

    def gen_datetime(self, node: dict[str, Any], path: str) -> str:
        spec, now = node["$datetime"], self.clock(path)
        if "days" in spec:
            day = now.date() + dt.timedelta(days=self.rng.randint(*spec["days"]))
            hour = self.rng.randint(*spec.get("at", (9, 17)))
            moment = dt.datetime.combine(day, dt.time(hour, self.rng.choice(SLOT_MINUTES), tzinfo=now.tzinfo))
        elif "hours" in spec:
            # Whole hours ahead land on a quarter hour like scheduled events do; minutes stay exact.
            moment = now + dt.timedelta(hours=self.rng.randint(*spec["hours"]))
            moment = moment.replace(minute=self.rng.choice(SLOT_MINUTES))
        else:
            moment = now + dt.timedelta(minutes=self.rng.randint(*spec["minutes"]))
        return moment.isoformat()

    def gen_count(self, node: dict[str, Any], _: str) -> _Deferred:
        return _Deferred("$count", node["$count"])

    def gen_sum(self, node: dict[str, Any], _: str) -> _Deferred:
        return _Deferred("$sum", node["$sum"])

    def gen_mean(self, node: dict[str, Any], _: str) -> _Deferred:
        return _Deferred("$mean", node["$mean"])

    def fill_deferred(self, node: Any, state: dict[str, Any]) -> Any:
        if isinstance(node, _Deferred):
            values = _collect(state, split_template_path(node.path) or [])
            if node.gen == "$count":
                return len(values[0]) if values and isinstance(values[0], list) else 0
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if node.gen == "$mean":
                return round(sum(numbers) / len(numbers), 2) if numbers else None
            return round(sum(numbers), 2)
        if isinstance(node, dict):
            return {k: self.fill_deferred(v, state) for k, v in node.items()}
        if isinstance(node, list):
            return [self.fill_deferred(v, state) for v in node]
        return node


# "$choice" -> _Expander.gen_choice, looked up once: planning expands ~100 nodes per task.
_HANDLERS = {"$" + name[4:]: method for name, method in vars(_Expander).items() if name.startswith("gen_")}


def _collect(node: Any, parts: list[str]) -> list[Any]:
    """Every value at a template path in a concrete state; [*] fans out over list items."""
    if not parts:
        return [node]
    head, rest = parts[0], parts[1:]
    if head == WILDCARD:
        return [v for item in node for v in _collect(item, rest)] if isinstance(node, list) else []
    return _collect(node[head], rest) if isinstance(node, dict) and head in node else []


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
