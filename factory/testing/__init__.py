"""Test support shipped with the package: an OpenAI-compatible teacher with fault injection, and a
table-driven student.

The names are loaded on first use: `python -m factory.testing.student_server` would otherwise find
its own module already imported by this package and warn (runpy's RuntimeWarning).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "FaultConfig": "factory.testing.faults",
    "TeacherServer": "factory.testing.process",
    "start_teacher_server": "factory.testing.process",
    "StudentServer": "factory.testing.student_server",
    "start_student_server": "factory.testing.student_server",
    "table_key": "factory.testing.student_table",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Load one of the package's names from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'factory.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
