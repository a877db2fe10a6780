"""Every error a run can meet, each message saying what happened and what to do.

    FactoryError                 base: the CLI prints its message and exits 2
    ├── SeedError                a state template is broken (lists file and key path of every problem)
    ├── StateParseError          a STATE block cannot be found or parsed
    ├── FieldNotFound            a field path is not in the state (also a KeyError)
    ├── ConfigError              bad flags, a bad --mix, or settings changed on resume
    ├── TrainConfigError         mlx_config.yaml has unknown keys or bad values (lists every problem)
    ├── DataFolderError          a training data folder mlx_lm would reject (lists file:line of each)
    ├── SuiteError               an eval suite cannot be built or read (names the file and line)
    ├── TeacherUnreachable       the teacher URL does not answer (names the URL and what to check)
    └── TeacherReplyError        a reply is unusable (malformed, truncated); carries a short reason

A malformed teacher reply never escapes as an exception from the pool: it becomes a rejected
record with its reason. These classes are for the boundaries (CLI, doctor, parse).
"""

from __future__ import annotations


class FactoryError(Exception):
    """Base of all errors the factory reports to a user."""


class SeedError(FactoryError):
    """One or more state templates are invalid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid seed template(s):\n" + "\n".join(f"  - {p}" for p in problems))


class StateParseError(FactoryError):
    """A STATE block is missing or is not one JSON object."""


class FieldNotFound(FactoryError, KeyError):
    """A field path does not exist in the state."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "field not found"


class ConfigError(FactoryError):
    """Invalid settings, or settings that differ from the run being resumed."""


class TrainConfigError(FactoryError):
    """The training config has unknown keys or bad values; every problem is listed."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("invalid training config:\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataFolderError(FactoryError):
    """A training data folder is missing files or holds rows mlx_lm would reject."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("training data not usable:\n" + "\n".join(f"  - {p}" for p in self.problems))


class SuiteError(FactoryError):
    """An eval suite cannot be built from a run, or a suite file is unreadable (file:line)."""


class TeacherUnreachable(FactoryError):
    """The teacher endpoint cannot be reached."""


class TeacherReplyError(FactoryError):
    """A teacher reply cannot be used; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
