"""Check any chat JSONL against the rules: a verdict per line, streamed; pass rates per rule and family.

A line is `{"messages": [...], "meta"?: {...}}`. The state comes from the system message's STATE
block. A factory record's meta holds id, kind, family, expect, template and `plan` (the rest of the
Task but its state), so the exact Task is rebuilt and every plan-aware rule runs. Meta without a
plan (older or foreign records) still gives a partial Task from its top-level fields (field,
canaries, forged, ...); anything it does not carry is left to the rules' plan-free fallbacks
rather than guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

import orjson

from factory.checks import RULES, Facts, Violation, run_checks, select_rules
from factory.errors import ConfigError, StateParseError
from factory.models import Expect, Kind, Message, Target, Task
from factory.state import has_path, lookup, parse_state

FORMAT = "format"  # the rule name for lines that cannot be checked at all (not JSON, no STATE, ...)
CHECKER = "checker"  # a rule raised on this line: a bug to report, kept from stopping a long run
NO_FAMILY = "?"
_KINDS = frozenset(get_args(Kind))
_EXPECTS = frozenset(get_args(Expect))
# Families whose planned answer is computed from the field (a date from a timestamp, a list's length),
# not the field's value. Meta without a plan lacks that value, so these get none to check against.
DERIVED_VALUE_FAMILIES = frozenset({"time_and_numbers"})
# Kept out of meta.plan: meta names these itself (world as "template"); the state is the system message.
_OUTSIDE_PLAN = frozenset({"id", "kind", "family", "expect", "world", "state"})
_TARGET_DEFAULTS = asdict(Target())
_STATE_KEYS = ("allowed_actions",)  # task lists that most states repeat verbatim: stored once, there
_WRITE_EVERY = 1024  # verdict lines buffered before a write


def parse_rules(text: str | None) -> list[str] | None:
    """Turn `--rules a,b` into rule names (None = every rule); ConfigError names any unknown one."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--rules is empty; give comma-separated names from: {', '.join(RULES)}")
    return select_rules(names)


def default_out(path: Path) -> Path:
    """Where the verdicts go by default: `<stem>.verdicts.jsonl` beside the input."""
    return path.with_name(f"{path.stem}.verdicts.jsonl")


def _bad(detail: str) -> list[Violation]:
    return [{"rule": FORMAT, "detail": detail}]


def _messages_problem(messages: Any) -> str | None:
    """Why `messages` cannot be checked, or None: rules expect a list of {role, content} text turns."""
    if not isinstance(messages, list) or not messages:
        return "the line has no non-empty 'messages' list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return f"message {i} is not an object with a 'role' string"
        if not isinstance(m.get("content"), str):
            return f"message {i} ({m['role']}) has no text 'content' (only plain-text chat is checked)"
    return None


def _system_state(messages: list[Message]) -> dict[str, Any] | str:
    """The state parsed from the first system message, or why there is none."""
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    if system is None:
        return "no system message, so no STATE block to check against"
    try:
        return parse_state(system)
    except StateParseError as exc:
        return f"system message: {exc}"


def task_from_meta(
    meta: Any, messages: list[Message], state: dict[str, Any]
) -> tuple[Task | None, list[Violation]]:
    """Rebuild a factory record's Task from its meta; (None, []) when meta lacks the core fields.

    Returns the task and format violations for meta that contradicts the state (then no task).
    With meta.plan the task is exact (see task_from_plan). Without it the task is partial: the
    planned value is meta.value when present, else the field's scalar value in the state (none for
    derived-value families, whose answer rule is then skipped); secrets, allowed actions, the
    payload and the requested action are left to the rules' fallbacks, and the planned number of
    user turns is the dialogue's own.
    """
    if not isinstance(meta, dict):
        return None, []
    ident, kind, family, expect = (meta.get(k) for k in ("id", "kind", "family", "expect"))
    if not (isinstance(ident, str) and kind in _KINDS and isinstance(family, str) and expect in _EXPECTS):
        return None, []
    if "plan" in meta:
        return task_from_plan(meta, state)
    path = meta.get("field") if isinstance(meta.get("field"), str) else None
    present = has_path(state, path) if path else None
    problem = _contradiction(expect, path, present)
    if problem:
        return None, _bad(problem)
    value = meta["value"] if "value" in meta else _state_value(state, path, present, family)
    if expect == "answer" and value is None:
        path = None  # no value to hold the reply to: the answer rule is skipped, not failed
    canaries = meta.get("canaries")
    forged = meta.get("forged")
    transform = meta.get("transform")
    target = Target(
        field=path,
        present=present,
        value=value,
        canaries=[c for c in canaries if isinstance(c, str)] if isinstance(canaries, list) else [],
        forged=forged if isinstance(forged, dict) else {},
        transform=transform if isinstance(transform, str) else None,
    )
    # Without this, the consistency rule would read the task's empty list instead of the state's.
    levels = Facts(messages, None, state).find_key("trust_levels")
    task = Task(
        id=ident,
        kind=kind,
        family=family,
        world=str(meta.get("template") or NO_FAMILY),
        sample_index=-1,
        state=state,
        expect=expect,
        user_turns=sum(1 for m in messages if m["role"] == "user"),
        target=target,
        trust_levels=[str(v) for v in levels[1]] if levels and isinstance(levels[1], list) else [],
    )
    return task, []


def task_meta(task: Task) -> dict[str, Any]:
    """The meta keys every record of a planned task starts with: what it is, and what it plants or forges."""
    return {
        "id": task.id,
        "kind": task.kind,
        "family": task.family,
        "expect": task.expect,
        "template": task.world,
        "canaries": task.target.canaries,
        "forged": task.target.forged,
    }


def plan_of(task: Task) -> dict[str, Any]:
    """Meta's `plan`: the task less what the record already holds; task_from_plan reverses it.

    Left out: id, kind, family, expect and world (meta's own keys), the state (the system message),
    target fields at their defaults, and list fields equal to the state's same top-level key.
    """
    plan = {f.name: getattr(task, f.name) for f in fields(task) if f.name not in _OUTSIDE_PLAN}
    plan["target"] = {k: v for k, v in asdict(task.target).items() if v != _TARGET_DEFAULTS[k]}
    for key in _STATE_KEYS:
        if plan[key] == task.state.get(key):
            del plan[key]
    return plan


def task_from_plan(meta: dict[str, Any], state: dict[str, Any]) -> tuple[Task | None, list[Violation]]:
    """The exact Task of a record whose meta holds `plan` (everything but the state), or why not."""
    plan = meta["plan"]
    if not isinstance(plan, dict) or not isinstance(plan.get("target"), dict):
        return None, _bad("meta.plan is not an object with a 'target' object")
    if not isinstance(plan.get("user_turns"), int):
        return None, _bad("meta.plan has no integer 'user_turns'")
    data = {k: state[k] for k in _STATE_KEYS if k not in plan and isinstance(state.get(k), list)}
    data |= {**plan, "state": state, "world": str(meta.get("template") or NO_FAMILY)}
    data |= {k: meta[k] for k in ("id", "kind", "family", "expect")}
    try:
        task = Task.from_dict(data)
    except TypeError as exc:  # unknown or missing keys: a plan from another version, or hand-edited
        return None, _bad(f"meta.plan does not describe a task: {exc}")
    path = task.target.field
    if path is not None and not isinstance(path, str):
        return None, _bad(f"meta.plan target field is {type(path).__name__}, not a path string")
    problem = _contradiction(task.expect, path, has_path(state, path) if path else None)
    return (None, _bad(problem)) if problem else (task, [])


def _contradiction(expect: str, path: str | None, present: bool | None) -> str | None:
    """Why the planned field contradicts the STATE block, or None."""
    if expect == "answer" and path and not present:
        return f"meta says expect='answer' for field `{path}`, which the STATE block lacks"
    if expect == "absent" and path and present:
        return f"meta says expect='absent' for field `{path}`, which the STATE block holds"
    return None


def _state_value(state: dict[str, Any], path: str | None, present: bool | None, family: str) -> Any:
    """The field's own value when it is the planned answer: a scalar, outside derived-value families."""
    if not present or path is None or family in DERIVED_VALUE_FAMILIES:
        return None
    value = lookup(state, path)
    return None if isinstance(value, dict | list) else value


def check_record(record: Any, rules: list[str] | None = None) -> list[Violation]:
    """Every violation of one parsed line; structural problems come back under rule `format`."""
    if not isinstance(record, dict):
        return _bad(f"the line is JSON {type(record).__name__}, not an object with 'messages'")
    messages = record.get("messages")
    problem = _messages_problem(messages)
    if problem:
        return _bad(problem)
    state = _system_state(messages)
    if isinstance(state, str):
        return _bad(state)
    task, found = task_from_meta(record.get("meta"), messages, state)
    try:
        return found + run_checks(messages, task, state, rules)
    except Exception as exc:  # a rule bug must not end a 100k-line run; the verdict names it
        return [
            *found,
            {"rule": CHECKER, "detail": f"a rule failed on this line: {type(exc).__name__}: {exc}"},
        ]


def check_line(line: bytes, rules: list[str] | None = None) -> tuple[dict[str, Any] | None, list[Violation]]:
    """Parse and check one JSONL line: (its meta when it has one, its violations)."""
    try:
        record = orjson.loads(line.rstrip(b"\r\n"))  # error positions then count within the line
    except orjson.JSONDecodeError as exc:
        return None, _bad(f"the line is not valid JSON: {exc}")
    meta = record.get("meta") if isinstance(record, dict) else None
    return (meta if isinstance(meta, dict) else None), check_record(record, rules)


@dataclass
class CheckSummary:
    """Counts of a checked file: dialogues, passes, and failures per rule and per family."""

    source: Path
    out: Path
    rules: list[str]
    total: int = 0
    ok: int = 0
    failed_by_rule: Counter[str] = field(default_factory=Counter)  # dialogues with >= 1 violation of it
    family_total: Counter[str] = field(default_factory=Counter)
    family_ok: Counter[str] = field(default_factory=Counter)

    def add(self, family: str, violations: list[Violation]) -> None:
        """Count one dialogue's verdict."""
        self.total += 1
        self.family_total[family] += 1
        if not violations:
            self.ok += 1
            self.family_ok[family] += 1
        self.failed_by_rule.update({v["rule"] for v in violations})

    def rule_rows(self) -> list[tuple[str, int, float]]:
        """(rule, dialogues failing it, pass rate) for the selected rules and any other rule that fired."""
        names = self.rules + sorted(set(self.failed_by_rule) - set(self.rules))
        return [
            (name, self.failed_by_rule[name], _rate(self.total - self.failed_by_rule[name], self.total))
            for name in names
        ]

    def family_rows(self) -> list[tuple[str, int, int, float]]:
        """(family, dialogues, ok, pass rate), families sorted by name."""
        return [
            (fam, n, self.family_ok[fam], _rate(self.family_ok[fam], n))
            for fam, n in sorted(self.family_total.items())
        ]


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(0-based line number, bytes) of every non-blank line, read as a stream."""
    with path.open("rb") as fid:
        for index, line in enumerate(fid):
            if line.strip():
                yield index, line


def check_file(source: Path, out: Path | None = None, rules: list[str] | None = None) -> CheckSummary:
    """Check every line of `source`, write one verdict line each to `out`, and return the counts.

    Verdict: {"index": line number (0-based), "id"?: meta.id, "ok": bool, "violations": [{rule, detail}]}.
    """
    if not source.is_file():
        raise ConfigError(
            f"{source}: no such file; give a chat JSONL file (one {{'messages': [...]}} a line)"
        )
    out = out or default_out(source)
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the input file; choose another verdicts path")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = CheckSummary(source=source, out=out, rules=list(rules or RULES))
    buffer: list[bytes] = []
    with out.open("wb") as sink:
        for index, line in iter_lines(source):
            meta, violations = check_line(line, rules)
            verdict: dict[str, Any] = {"index": index}
            if meta is not None and isinstance(meta.get("id"), str):
                verdict["id"] = meta["id"]
            verdict |= {"ok": not violations, "violations": violations}
            buffer.append(orjson.dumps(verdict))
            family = meta.get("family") if meta is not None else None
            summary.add(family if isinstance(family, str) and family else NO_FAMILY, violations)
            if len(buffer) >= _WRITE_EVERY:
                sink.write(b"\n".join(buffer) + b"\n")
                buffer.clear()
        if buffer:
            sink.write(b"\n".join(buffer) + b"\n")
    return summary
