"""Test support shipped with the package: an OpenAI-compatible teacher with fault injection, and a
table-driven student."""

from factory.testing.faults import FaultConfig
from factory.testing.process import TeacherServer, start_teacher_server
from factory.testing.student_server import StudentServer, start_student_server
from factory.testing.student_table import table_key

__all__ = [
    "FaultConfig",
    "StudentServer",
    "TeacherServer",
    "start_student_server",
    "start_teacher_server",
    "table_key",
]
