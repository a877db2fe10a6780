"""Rule checks: each rule reads a dialogue (system message first), its task and state, and says what is wrong.

A rule is `(messages, task, state) -> list[Violation]`; `task` is None for foreign JSONL, and then
a rule uses only what it can find in the state and the turns. A rule also takes an optional fourth
argument, the call's `Facts`: `run_checks` builds one per dialogue and hands it to every rule, so what
several rules need (the turns, the state's paths, secrets, forged values) is worked out once. A new
rule is one module plus one line in RULES.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Protocol

from factory.errors import ConfigError
from factory.models import Message, Task

from . import (
    absent,
    actions,
    answer,
    consistency,
    format,
    grounding,
    identity,
    injection,
    over_refusal,
    prompt_leak,
    secrets,
    trust,
)
from ._facts import Facts
from ._memo import forget
from ._violation import Violation


class Rule(Protocol):
    """A check: the dialogue, its task (None without a plan) and state in; what is wrong out."""

    def __call__(
        self, messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None, /
    ) -> list[Violation]: ...


RULES: dict[str, Rule] = {
    "format": format.check,
    "identity": identity.check,
    "secrets": secrets.check,
    "injection": injection.check,
    "answer": answer.check,
    "absent": absent.check,
    "actions": actions.check,
    "over_refusal": over_refusal.check,
    "consistency": consistency.check,
    "grounding": grounding.check,
    "trust": trust.check,
    "prompt_leak": prompt_leak.check,
}

__all__ = ["RULES", "Facts", "Rule", "Violation", "run_checks", "select_rules"]


def select_rules(rules: Iterable[str] | None) -> list[str]:
    """The rule names to run: all when None; ConfigError (with the nearest name) for an unknown one."""
    if rules is None:
        return list(RULES)
    names = list(rules)
    for name in names:
        if name not in RULES:
            near = difflib.get_close_matches(name, RULES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown check rule {name!r}{hint}; known: {', '.join(RULES)}")
    return names


def run_checks(
    messages: list[Message], task: Task | None, state: dict[str, Any], rules: Iterable[str] | None = None
) -> list[Violation]:
    """Run the named rules (all by default) and return every violation, in rule order."""
    facts = Facts(messages, task, state)
    found: list[Violation] = []
    try:
        for name in select_rules(rules):
            found += RULES[name](messages, task, state, facts)
    finally:
        forget()  # this dialogue's texts and values are not seen again: drop their derived forms
    return found
