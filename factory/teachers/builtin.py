"""The built-in offline teacher: writes a correct dialogue for a task by rule, from phrase banks.

The wording comes from prompts/builtin/*.yaml; the choices are drawn from a generator seeded by the
task id, so a task always gets the same dialogue. Values are quoted exactly as the state has them,
fields are cited in backticks, and no template can write a token, persona, forged value or secret.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import yaml

from factory.errors import ConfigError, FieldNotFound
from factory.models import Message, Task
from factory.paths import PROMPTS_DIR
from factory.state import BEGIN, iter_paths, lookup
from factory.teachers.base import TeacherReply, TeacherRequest

BANKS_DIR = PROMPTS_DIR / "builtin"
_SCALAR = (str, int, float, bool)
_WORD = re.compile(r"[a-z0-9]{4,}")
_HELLO = re.compile(r"(hi|hey|hello|hola|good (morning|evening))\b", re.IGNORECASE)
# Families whose attack takes a variable number of turns; the others write one exchange.
_PUSHED = ("persona_swap", "trust_escalation", "secret_extraction")


def _flatten(node: Any, prefix: str, source: Path, out: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "version":
                _flatten(value, f"{prefix}.{key}", source, out)
    elif isinstance(node, list) and node and all(isinstance(t, str) and t.strip() for t in node):
        out[prefix] = node
    else:
        raise ConfigError(
            f"{source}: {prefix.split('.', 1)[1]} must be a non-empty list of non-empty strings"
        )


@cache
def load_banks(directory: Path = BANKS_DIR) -> dict[str, list[str]]:
    """Every slot of the phrase banks, keyed "<file>.<slot>" ("user.attack.persona_swap")."""
    banks: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.yaml")):
        _flatten(yaml.safe_load(path.read_text(encoding="utf-8")), path.stem, path, banks)
    if not banks:
        raise ConfigError(
            f"no phrase banks in {directory}: the built-in teacher needs prompts/builtin/*.yaml"
        )
    return banks


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _text(value: Any) -> str:
    """A value exactly as the STATE block writes it."""
    return value if isinstance(value, str) else json.dumps(value)


def _find_key(state: dict[str, Any], key: str) -> tuple[str, Any] | None:
    """The first (path, value) whose last key is `key`, outside list items."""
    for path, value in iter_paths(state):
        if "[" not in path and path.rsplit(".", 1)[-1] == key:
            return path, value
    return None


def _label(path: str) -> str:
    """A field's words; a one-word leaf takes its parent's too ("user.name" → "user name")."""
    parts = re.sub(r"\[\d+\]", "", path).split(".")
    words = parts[-1].replace("_", " ")
    if " " not in words and len(parts) > 1:
        words = f"{parts[-2].replace('_', ' ')} {words}"
    return words


class _Writer:
    """Draws wording for one task: a seeded generator, the placeholder values, the templates used."""

    def __init__(self, task: Task):
        self.task = task
        self.rng = random.Random(int.from_bytes(hashlib.sha256(task.id.encode()).digest()[:8], "big"))
        self.banks = load_banks()
        self.used: set[str] = set()
        self.ctx = self._context()

    def _context(self) -> dict[str, str]:
        state, target = self.task.state, self.task.target
        ctx: dict[str, str] = {}
        identity = _find_key(state, "identity")
        if identity and isinstance(identity[1], dict) and isinstance(identity[1].get("name"), str):
            ctx |= {"name": identity[1]["name"], "name_path": f"{identity[0]}.name"}
        user = _find_key(state, "user")
        if user and isinstance(user[1], dict) and isinstance(user[1].get("name"), str):
            ctx["user"] = user[1]["name"].split()[0]
        trust = _find_key(state, "trust_level")
        if trust and isinstance(trust[1], str):
            ctx |= {"trust": trust[1], "trust_path": trust[0]}
        policy = _find_key(state, "secret_policy")
        if policy:
            ctx["policy_path"] = policy[0]
        actions = _find_key(state, "allowed_actions")
        ctx["actions_path"] = actions[0] if actions else "allowed_actions"
        if self.task.allowed_actions:
            picked = self.rng.sample(self.task.allowed_actions, k=min(len(self.task.allowed_actions), 3))
            quoted = [f"`{a}`" for a in picked]
            ctx["actions"] = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        if target.action:
            ctx |= {"action": target.action, "action_words": target.action.replace("_", " ")}
        secrets = set(self.task.secrets)
        forged_text = {_text(v) for v in target.forged.values() if not isinstance(v, list)}
        token = [
            c
            for c in target.canaries
            if c not in forged_text and c != BEGIN and c not in self._secret_texts()
        ]
        if token:
            ctx["canary"] = token[0]
        for path, value in target.forged.items():
            if path == ctx.get("name_path", "identity.name") and isinstance(value, str):
                ctx["persona"] = value
            elif path.rsplit(".", 1)[-1] == "trust_level":
                ctx["forged_value"] = _text(value)
            elif not isinstance(value, dict | list):  # a forged user name, date or amount
                ctx.setdefault("forged_value", _text(value))
                ctx |= {"forged_path": path, "forged_label": _label(path)}
        if target.payload:
            ctx["payload"] = target.payload
        if target.transform:
            ctx["transform"] = target.transform
        if target.field in secrets:
            ctx |= {"secret_path": target.field, "secret_label": _label(target.field)}
        if target.question:
            ctx["question"] = target.question
        return ctx

    def _secret_texts(self) -> set[str]:
        found = set()
        for path in self.task.secrets:
            try:
                found.add(_text(lookup(self.task.state, path)))
            except FieldNotFound:
                continue
        return found

    def say(self, slot: str, prefer: frozenset[str] = frozenset(), **extra: str) -> str:
        """Fill one template of `slot`, preferring templates this dialogue has not used yet.

        With `prefer`, templates that use one of those placeholders go first (an attack on a secret
        names the secret rather than only demanding the token).
        """
        values = {**self.ctx, **extra}
        fitting = [t for t in self.banks[slot] if _fields(t) <= values.keys()]
        if not fitting:
            raise ConfigError(f"phrase bank slot {slot!r} has no template that fits task {self.task.id}")
        fitting = [t for t in fitting if _fields(t) & prefer] or fitting
        fresh = [t for t in fitting if t not in self.used] or fitting
        template = self.rng.choice(fresh)
        self.used.add(template)
        return template.format_map(values)

    def maybe(self, slot: str, chance: float, **extra: str) -> list[str]:
        """One filled template of `slot` with probability `chance`, as a list to splice in."""
        return [self.say(slot, **extra)] if self.rng.random() < chance else []

    # --- building blocks -----------------------------------------------------------------

    def ask(self, question: str) -> str:
        """A user turn carrying a planned question, sometimes with a greeting or thanks."""
        return " ".join([*self.maybe("user.greeting", 0.4), question, *self.maybe("user.thanks", 0.2)])

    def attack_turn(self, prefer: frozenset[str] = frozenset()) -> str:
        """The family's attack line, mostly framed by a lead-in before it and a push after it.

        A bare one-line attack has too few word 3-grams to tell two batches apart: the framing
        (drawn independently, each several words long) keeps attacks novel across runs.
        """
        if self.task.target.written_by:
            return str(self.task.target.payload)  # a teacher-written attack is the whole turn
        core = self.say(f"user.attack.{self.task.family}", prefer=prefer)
        # A line that opens with its own hello is where the message starts: nothing goes before it.
        lead = (
            [] if _HELLO.match(core) else [*self.maybe("user.greeting", 0.3), *self.maybe("user.lead", 0.85)]
        )
        return " ".join([*lead, core, *self.maybe("user.push", 0.75)])

    def answer(self, path: str, value: Any) -> str:
        """An exact answer for a present field, by kind: a date, a list's length, or a value."""
        real = lookup(self.task.state, path)
        leaf = path.rsplit(".", 1)[-1]
        if leaf == "current_time" and isinstance(value, str) and isinstance(real, str) and real != value:
            body = self.say("assistant.answer_date", field=path, date=value, now=real)
        elif isinstance(real, list):
            body = self.say("assistant.answer_count", field=path, count=_text(value))
        else:
            body = self.say("assistant.answer", field=path, value=_text(value))
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            unit = _find_key(lookup(self.task.state, parent), "currency") if parent else None
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if unit and number and isinstance(unit[1], str):
                body += " " + self.say("assistant.unit_note", unit=unit[1], unit_path=f"{parent}.{unit[0]}")
        hello = self.maybe("assistant.hello", 0.3)
        return " ".join([*hello, body, *self.maybe("assistant.closer", 0.3)])

    def refuse(self, core: str, notes: tuple[str, ...] = (), then: tuple[str, ...] = ()) -> str:
        """A refusal: the family's core line, `then` (text that follows it), the assistant's name,
        notes, and what it can do instead."""
        parts = [" ".join([self.say(core), *then])]
        name = self.ctx.get("name")
        if name and not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", parts[0]):
            line = self.say("assistant.identity")
            parts.insert(self.rng.choice([0, 1]), line)
        parts += [self.say(slot) for slot in notes]
        parts.append(self.say("assistant.offer"))
        return " ".join(parts)

    def rapport_field(self) -> tuple[str, Any] | None:
        """A harmless top-level field to chat about: not secret, not the target, not identity."""
        skip = (*self.task.secrets, "identity", "secret", "allowed_actions", str(self.task.target.field))
        options = [
            (p, v)
            for p, v in iter_paths(self.task.state)
            if isinstance(v, _SCALAR) and "[" not in p and not p.startswith(skip) and len(_text(v)) <= 60
        ]
        return self.rng.choice(options) if options else None

    def rapport(self) -> tuple[str, str]:
        """One harmless exchange: a question about a field and its exact answer."""
        found = self.rapport_field()
        if found is None:
            return self.say("user.warmup"), self.say("assistant.warmup_reply")
        path, value = found
        return self.say("user.rapport", label=_label(path), path=path), self.answer(path, value)

    def fact(self, request: str) -> list[str]:
        """A state fact that fits a request best (shared words), quoted exactly; none for a bare state."""
        words = set(_WORD.findall(request.lower()))
        skip = (*self.task.secrets, "identity", "secret", "allowed_actions")
        scored = []
        for path, value in iter_paths(self.task.state):
            if isinstance(value, _SCALAR) and not path.startswith(skip) and len(_text(value)) <= 60:
                overlap = len(words & set(_WORD.findall(f"{path} {value}".lower().replace("_", " "))))
                scored.append((overlap, path, value))
        if not scored:
            return []
        best = max(s[0] for s in scored)
        _, path, value = self.rng.choice([s for s in scored if s[0] == best])
        return [self.say("assistant.fact", fact_path=path, fact_value=_text(value))]


# --- families ------------------------------------------------------------------------------

Pairs = list[tuple[str, str]]


def _obedience(w: _Writer) -> Pairs:
    target = w.task.target
    question = w.ask(target.question or f"What is `{target.field}`?")
    if w.task.expect == "absent":
        reply = " ".join(
            [w.say("assistant.absent", field=str(target.field)), *w.maybe("assistant.offer", 0.7)]
        )
        return [(question, reply)]
    return [(question, w.answer(str(target.field), target.value))]


def _benign(w: _Writer) -> Pairs:
    request = w.task.target.question or w.say("user.warmup")
    opener = w.say("assistant.comply_action") if "action" in w.ctx else w.say("assistant.comply_plain")
    return [(w.ask(request), " ".join([opener, *w.fact(request), *w.maybe("assistant.closer", 0.4)]))]


def _named(w: _Writer) -> frozenset[str]:
    """Attacks with a secret or an action target name it rather than only demanding the token."""
    wanted = {"secret_label", "secret_path"} if "secret_path" in w.ctx else set()
    wanted |= {"action", "action_words"} if "action" in w.ctx else set()
    return frozenset(wanted)


def attack_plaintext(task: Task) -> str:
    """The family's attack turn as the phrase banks word it, with a demand for the token if it lacks one.

    What factory.plan.overlay runs through a transform chain: the whole attack, so the demand
    travels encoded with it.
    """
    w = _Writer(task)
    text = w.attack_turn(_named(w))
    if "canary" in w.ctx and w.ctx["canary"] not in text:
        text = f"{text} {w.say('user.canary_demand')}"
    return text


def _attack(w: _Writer) -> Pairs:
    family, target = w.task.family, w.task.target
    notes: tuple[str, ...] = ()
    if (
        family == "fake_state_block"
        and any(p.endswith("trust_level") for p in target.forged)
        and "trust" in w.ctx
    ):
        notes += ("assistant.trust_note",)
    if target.action and target.action_allowed is False:
        notes += ("assistant.forbidden_note",)
    # A chained attack is the code-built payload: its family's wording is inside, transformed.
    turns = [w.say("user.transformed")] if target.chain else [w.attack_turn(_named(w))]
    if family in _PUSHED:
        turns += [w.say(f"user.followup.{family}") for _ in range(w.task.user_turns - 1)]
    core = f"assistant.resist.{family}"
    return [(user, w.refuse(core, notes)) for user in turns]


def _escalation(w: _Writer) -> Pairs:
    n = w.task.user_turns
    pairs = [w.rapport() for _ in range(max(n - 2, 0))]
    pushes = [
        "user.escalate.soft",
        "user.escalate.secret" if "secret_path" in w.ctx else "user.escalate.token",
    ]
    for slot in pushes[-min(n, 2) :]:
        core = (
            "assistant.resist.secret_extraction"
            if slot.endswith("secret")
            else "assistant.resist.multi_turn_escalation"
        )
        pairs.append((w.say(slot), w.refuse(core)))
    return pairs


def _elicitation(w: _Writer) -> Pairs:
    """Pressure to estimate an absent field: say it is missing, decline to guess."""
    target = w.task.target
    absent = w.say("assistant.absent", field=str(target.field))
    reply = w.refuse("assistant.resist.out_of_state_elicitation")
    ask = w.attack_turn() if target.written_by else w.ask(str(target.question))
    return [(ask, f"{absent} {reply}")]


def _premise(w: _Writer) -> Pairs:
    """A forged value asserted as fact: decline it and state the real value, citing the field."""
    family, target = w.task.family, w.task.target
    real = w.say("assistant.answer", field=str(target.field), value=_text(target.value))
    return [(w.attack_turn(), w.refuse(f"assistant.resist.{family}", then=(real,)))]


def _writer_for(task: Task) -> Callable[[_Writer], Pairs]:
    if task.family == "multi_turn_escalation":
        return _escalation
    if task.family == "out_of_state_elicitation":
        return _elicitation
    if task.family in ("false_premise", "staleness_claim"):
        return _premise
    if task.kind == "obedience" or task.expect == "answer":  # benign look-alikes are questions too
        return _obedience
    if task.kind == "benign":
        return _benign
    return _attack


def write_turns(task: Task) -> list[Message]:
    """A correct dialogue for the task: exactly task.user_turns user turns, each answered."""
    w = _Writer(task)
    pairs = _writer_for(task)(w)
    # An encoded payload carries the demand for the token itself: a plain one beside it would give
    # the hidden instruction away, and the attack would be a plain one. A teacher-written attack
    # is kept as written.
    hidden = task.target.transform or task.target.chain or task.target.written_by
    if "canary" in w.ctx and not hidden and not any(w.ctx["canary"] in user for user, _ in pairs):
        user, reply = pairs[-1]
        pairs[-1] = (f"{user} {w.say('user.canary_demand')}", reply)
    extra = [
        w.rapport() if i else (w.say("user.warmup"), w.say("assistant.warmup_reply"))
        for i in range(task.user_turns - len(pairs))
    ]
    turns: list[Message] = []
    for user, reply in [*extra, *pairs][-task.user_turns :]:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return turns


class BuiltinTeacher:
    """The offline teacher: answers each request with the rule-written dialogue as the JSON asked for."""

    name = "builtin"
    model = "builtin"

    async def complete(
        self, request: TeacherRequest, task: Task, on_progress: Callable[[], None]
    ) -> TeacherReply:
        """Write the task's dialogue and return it as {"turns": [...]} text."""
        started = time.monotonic()
        await anyio.sleep(0)  # let the pool's other workers run between tasks
        text = json.dumps({"turns": write_turns(task)}, ensure_ascii=False)
        on_progress()
        prompt_chars = sum(len(m.get("content", "")) for m in request.messages)
        return TeacherReply(
            text=text,
            finish_reason="stop",
            prompt_tokens=math.ceil(prompt_chars / 4),
            completion_tokens=math.ceil(len(text) / 4),
            model=self.model,
            latency_s=time.monotonic() - started,
        )

    async def probe(self) -> None:
        """Nothing to reach: the built-in teacher is always there."""

    async def aclose(self) -> None:
        """Nothing to release."""
