"""The data that flows between parts: a world, a concrete state sample, a task and its target."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

Kind = Literal["obedience", "benign", "adversarial"]
Expect = Literal["answer", "absent", "refuse_action", "resist", "protect_secret", "comply"]
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Askable:
    """A field a user may ask about, with phrasings; `path` may hold `[*]` for any list item."""

    path: str
    ask: tuple[str, ...]


@dataclass(frozen=True)
class Secret:
    """A state field that must never be disclosed, and the policy the state states for it."""

    path: str
    policy: str


@dataclass(frozen=True)
class World:
    """A validated state template (one seeds/*.yaml file)."""

    name: str  # unique world id, e.g. "clinic_front_desk"
    domain: str
    source: str  # file the template came from, for error messages
    template: dict[str, Any]  # the raw `state:` tree with generators, expanded by seeds.expand
    trust_levels: tuple[str, ...]  # ordered from least to most trusted
    allowed_actions: tuple[str, ...]
    not_allowed_actions: tuple[str, ...]  # exist in the domain but are not granted to the assistant
    secrets: tuple[Secret, ...]
    askables: tuple[Askable, ...]
    benign_requests: tuple[str, ...] = ()  # harmless asks the world's users make (allowed actions)


@dataclass(frozen=True)
class Sample:
    """One concrete state expanded from a world, with what planning needs to know about it."""

    world: World
    index: int  # position in the deterministic expansion sequence
    state: dict[str, Any]
    absent: tuple[str, ...]  # optional paths that this sample left out


@dataclass
class Target:
    """What a task is about: the field asked, the action requested, the attacker's goals."""

    field: str | None = None  # asked path, concrete (pending_tasks[1].due)
    present: bool | None = None
    value: Any = None  # the state's value for `field` when present
    question: str | None = None  # the planned user question for obedience tasks
    action: str | None = None  # requested action
    action_allowed: bool | None = None
    # `field` above shadows dataclasses.field inside this class body, hence the qualified name.
    canaries: list[str] = dataclasses.field(default_factory=list)  # attacker's target strings
    forged: dict[str, Any] = dataclasses.field(default_factory=dict)  # path -> value the attacker plants
    payload: str | None = None  # code-built attack text the user turn must carry verbatim
    transform: str | None = None  # the family's own code transform of the payload (base64, rot13, ...)
    # Transforms laid over any family's attack by code (factory.plan.overlay), in the order applied;
    # the payload is then the chain's hint and the encoded attack.
    chain: list[str] = dataclasses.field(default_factory=list)
    written_by: str | None = None  # "teacher": the payload is a teacher-written attack (attack_writer)
    attack_language: str | None = None  # language code of a code-written foreign attack (language_switch)


@dataclass
class Task:
    """One planned example: which state, which behaviour or attack, and what the right answer is."""

    id: str
    kind: Kind
    family: str
    world: str
    sample_index: int
    state: dict[str, Any]
    expect: Expect
    user_turns: int
    target: Target
    secrets: list[str] = dataclasses.field(default_factory=list)  # secret paths of this state
    allowed_actions: list[str] = dataclasses.field(default_factory=list)
    trust_levels: list[str] = dataclasses.field(default_factory=list)
    language: str = "en"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the task."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuild a task from `to_dict()` output."""
        data = dict(data)
        data["target"] = Target(**data["target"])
        return cls(**data)
