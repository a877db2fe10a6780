"""Teachers: one protocol, two kinds (OpenAI-compatible HTTP, built-in offline)."""

from __future__ import annotations

from typing import Any

from factory.teachers.base import Teacher


def make_teacher(settings: dict[str, Any]) -> Teacher:
    """Build the teacher named by settings['teacher']: 'builtin' or an OpenAI-compatible base URL."""
    spec = settings["teacher"]
    if spec == "builtin":
        from factory.teachers.builtin import BuiltinTeacher

        return BuiltinTeacher()
    from factory.teachers.openai_compat import OpenAITeacher

    return OpenAITeacher(
        spec,
        model=settings["model"],
        api_key=settings["api_key"],
        stream=settings["stream"],
        timeout=settings["request_timeout"],
    )
