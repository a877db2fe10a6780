"""Test support shipped with the package: an OpenAI-compatible teacher with fault injection."""

from factory.testing.faults import FaultConfig
from factory.testing.process import TeacherServer, start_teacher_server

__all__ = ["FaultConfig", "TeacherServer", "start_teacher_server"]
