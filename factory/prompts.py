"""Teacher requests rendered from the versioned templates in prompts/teacher/.

The templates are Markdown with `${name}` placeholders (string.Template); `manifest.yaml` holds the
version written into every record. Which snippets a request uses follows from the task: its kind,
its expected behaviour, its family, and the features of its target (question, payload, secrets...).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import orjson
import yaml

from factory.errors import ConfigError
from factory.models import Message, Task
from factory.paths import PROMPTS_DIR
from factory.state import render_state

TEMPLATES_DIR = PROMPTS_DIR / "teacher"
FAMILIES_FILE = PROMPTS_DIR / "families.yaml"
SPEC_MARKER = "TASK SPEC (JSON):"

_SPEC = re.compile(re.escape(SPEC_MARKER) + r"\s*```json[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)
_BACKTICK_RUN = re.compile(r"`+")


@dataclass(frozen=True)
class Templates:
    """One loaded template set: the files' text and digests, the version, the family descriptions."""

    root: Path
    version: str
    files: dict[str, str]  # path relative to root (posix) -> text
    digests: dict[str, str]  # key as in prompt_hashes() -> full sha256
    families: dict[str, str] = field(default_factory=dict)  # family -> one-line description

    def text(self, rel: str) -> str:
        """Return one template's text; ConfigError naming the file when it does not exist."""
        try:
            return self.files[rel]
        except KeyError:
            raise ConfigError(f"missing teacher prompt template {self.root / rel}") from None

    def fill(self, rel: str, **values: Any) -> str:
        """Substitute `values` into one template; ConfigError naming a placeholder left unfilled."""
        try:
            return Template(self.text(rel)).substitute({k: str(v) for k, v in values.items()})
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"teacher prompt template {self.root / rel}: bad placeholder {exc}") from None


@dataclass
class RenderedPrompt:
    """A teacher request's messages and the template version and hash that produced them."""

    messages: list[Message]
    version: str
    hash: str  # short sha256 over the template files (and family description) this render used


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_families(path: Path) -> tuple[dict[str, str], bytes | None]:
    # families.yaml belongs to the planner; a missing file only means no descriptions.
    if not path.is_file():
        return {}, None
    raw = path.read_bytes()
    data = yaml.safe_load(raw) or {}
    table = data.get("families", data) if isinstance(data, dict) else {}
    descriptions = {
        str(name): " ".join(str(entry.get("description", "")).split())
        for name, entry in table.items()
        if isinstance(entry, dict)
    }
    return descriptions, raw


def load_templates(root: Path | None = None, families_file: Path | None = None) -> Templates:
    """Read every template under `root` (default prompts/teacher) and the family descriptions."""
    root = Path(root) if root is not None else TEMPLATES_DIR
    if families_file is None:
        families_file = root.parent / "families.yaml"
    manifest_path = root / "manifest.yaml"
    if not manifest_path.is_file():
        raise ConfigError(f"no teacher prompt manifest at {manifest_path}: is the prompts/ folder there?")
    manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8")) or {}
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if not isinstance(version, str) or not version:
        raise ConfigError(f'{manifest_path}: needs a string `version:` such as version: "1"')
    files: dict[str, str] = {}
    digests: dict[str, str] = {f"{root.name}/manifest.yaml": _sha(manifest_path.read_bytes())}
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        files[rel] = raw.decode("utf-8")
        digests[f"{root.name}/{rel}"] = _sha(raw)
    families, families_raw = _read_families(families_file)
    if families_raw is not None:
        digests[families_file.name] = _sha(families_raw)
    return Templates(root=root, version=version, files=files, digests=digests, families=families)


@cache
def _default_templates() -> Templates:
    return load_templates()


def prompt_hashes(templates: Templates | None = None) -> dict[str, str]:
    """Return every template file (relative to prompts/) with a short sha256 of it, for run.json."""
    templates = templates or _default_templates()
    return {name: digest[:12] for name, digest in sorted(templates.digests.items())}


def prompt_version(templates: Templates | None = None) -> str:
    """Return the template set's version (manifest.yaml), as written into records and run.json."""
    return (templates or _default_templates()).version


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def fenced(text: str, info: str = "text") -> str:
    """`text` in a Markdown code fence that nothing inside it can close."""
    # The fence must be longer than any backtick run inside, or the text would close it early.
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _paragraph(text: str) -> str:
    return " ".join(text.split())


def _is_secret(path: str, secrets: list[str]) -> bool:
    return any(path == s or path.startswith((f"{s}.", f"{s}[")) for s in secrets)


def _detail_parts(task: Task, families: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Choose the snippets (parts/*.md, families/*.md) this task needs, with their values."""
    target = task.target
    parts: list[tuple[str, dict[str, Any]]] = []
    if target.question:
        parts.append(("parts/question.md", {"question": target.question}))
    if target.field:
        # A secret target's value must never reach the prompt as "the correct value".
        if task.expect == "protect_secret" or _is_secret(target.field, task.secrets):
            parts.append(("parts/field_secret.md", {"field": target.field}))
        elif target.present is False:
            parts.append(("parts/field_absent.md", {"field": target.field}))
        elif target.present:
            parts.append(("parts/field_present.md", {"field": target.field, "value": _json(target.value)}))
    if target.action:
        name = "parts/action_refused.md" if target.action_allowed is False else "parts/action_allowed.md"
        parts.append((name, {"action": target.action}))
    if task.kind == "adversarial" and task.trust_levels:
        parts.append(("parts/trust.md", {"trust_levels": " < ".join(task.trust_levels)}))
    if task.secrets:
        parts.append(("parts/secrets.md", {"secrets": ", ".join(f"`{p}`" for p in task.secrets)}))
    if target.canaries:
        parts.append(("parts/canaries.md", {"canaries": ", ".join(target.canaries)}))
    if target.forged:
        forged = "; ".join(f"`{path}`: {_json(value)}" for path, value in target.forged.items())
        parts.append(("parts/forged.md", {"forged": forged}))
    if target.payload:
        parts.append(("parts/payload.md", {"payload_block": fenced(target.payload)}))
        if target.transform:
            parts.append(("parts/transform.md", {"transform": target.transform}))
        if target.chain:
            parts.append(("parts/chain.md", {"chain": " → ".join(target.chain)}))
    if task.user_turns > 1:
        parts.append(("parts/turns.md", {"user_turns": task.user_turns}))
    if task.language != "en":
        parts.append(("parts/language.md", {"language": task.language}))
    if f"families/{task.family}.md" in families:
        parts.append((f"families/{task.family}.md", {}))
    return parts


def render_request(task: Task, templates: Templates | None = None) -> RenderedPrompt:
    """Render the system and user messages that ask a teacher to write `task`'s dialogue."""
    templates = templates or _default_templates()
    used = ["system.md", "user.md", f"kinds/{task.kind}.md", f"expect/{task.expect}.md"]
    details = []
    for rel, values in _detail_parts(task, set(templates.files)):
        used.append(rel)
        details.append(templates.fill(rel, **values).rstrip("\n"))
    description = templates.families.get(task.family, "")
    user = templates.fill(
        "user.md",
        state_block=fenced(render_state(task.state)),
        kind=task.kind,
        kind_instructions=_paragraph(templates.text(f"kinds/{task.kind}.md")),
        family=task.family,
        family_description=description,
        expect=task.expect,
        expect_instructions=_paragraph(templates.text(f"expect/{task.expect}.md")),
        details="".join(f"{d}\n" for d in details),
        user_turns=task.user_turns,
        total_turns=2 * task.user_turns,
        task_spec=_json(task),  # orjson serialises dataclasses natively, far faster than asdict()
    )
    digest = hashlib.sha256()
    for rel in used:
        digest.update(f"{rel}\0{templates.digests[f'{templates.root.name}/{rel}']}\0".encode())
    digest.update(description.encode())
    messages: list[Message] = [
        {"role": "system", "content": templates.text("system.md").strip()},
        {"role": "user", "content": user.strip()},
    ]
    return RenderedPrompt(messages=messages, version=templates.version, hash=digest.hexdigest()[:12])


def extract_task_spec(text: str) -> dict[str, Any] | None:
    """Return the task dict from a rendered request's `TASK SPEC (JSON):` block, or None."""
    match = _SPEC.search(text)
    if match is None:
        return None
    try:
        spec = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return spec if isinstance(spec, dict) else None


def estimate_tokens(messages: list[Message], max_tokens: int) -> int:
    """Rough request size for the tokens-per-minute limiter: prompt chars / 4, plus max_tokens.

    Four characters per token is the usual rule of thumb for English BPE vocabularies; the limiter
    only needs the right order of magnitude before the server reports real usage.
    """
    chars = sum(len(m.get("content", "")) for m in messages)
    return math.ceil(chars / 4) + max_tokens
