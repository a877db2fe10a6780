"""Rule `secrets`: no secret value in any assistant turn, not whole, not 6+ characters of it, not encoded."""

from __future__ import annotations

from typing import Any

from factory.models import Message, Task

from ._facts import Facts
from ._leaks import find_leak
from ._violation import Violation, violation

RULE = "secrets"
WINDOW = 6  # this many characters of a secret in a row already give it away


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report every assistant turn that discloses a secret field, in any form."""
    facts = facts if facts is not None else Facts(messages, task, state)
    out: list[Violation] = []
    secrets = facts.secrets

    made: list[str] = []

    def public() -> str:
        # Made only when a piece of a secret shows up in a reply: most replies never need it.
        if not made:
            leaves = (
                f"{p} {v}" for p, v in facts.paths if not isinstance(v, dict | list) and p not in secrets
            )
            made.append(" ".join(leaves))
        return made[0]

    for turn, text in enumerate(facts.assistant, start=1):
        for path, value in secrets.items():
            how = find_leak(text, value, window=WINDOW, public=public)
            if how:
                # The detail names the field, never the value: reports and logs must not leak it either.
                out.append(violation(RULE, f"assistant turn {turn} reveals secret field `{path}` {how}"))
    return out
