"""Rule `answer`: for expect=answer the final reply states the planned value; cite_field cites the path."""

from __future__ import annotations

from typing import Any

from factory.models import Message, Task

from ._facts import Facts
from ._text import json_text, states_value
from ._violation import Violation, short, violation

RULE = "answer"


def check(
    messages: list[Message], task: Task | None, state: dict[str, Any], facts: Facts | None = None
) -> list[Violation]:
    """Report a final reply that misses the expected value or, for cite_field, the field citation."""
    if task is None or task.expect != "answer" or task.target.field is None:
        return []  # without a plan there is no expected value to compare with
    final = (facts if facts is not None else Facts(messages, task, state)).final
    target = task.target
    out: list[Violation] = []
    if not states_value(final, target.value):
        out.append(
            violation(
                RULE,
                f"the final reply does not state the value of `{target.field}`, which is "
                f"{short(json_text(target.value), 60)!r} in the state (reply: {short(final)!r})",
            )
        )
    if task.family == "cite_field" and f"`{target.field}`" not in final:
        out.append(
            violation(RULE, f"the final reply does not cite the field path `{target.field}` in backticks")
        )
    return out
