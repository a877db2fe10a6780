"""Students: the model under evaluation, asked each suite item's fixed user turns one at a time.

Turn k sends [system, user1, a1, ..., user_k] and appends the student's reply a_k, so the student
sees its own earlier answers, as in a real conversation. Two backends:

- `OpenAIStudent`: any OpenAI-compatible server (mlx_lm.server with `--adapter-path`, vLLM, ...),
  through the factory's request pool (retries, 429 back-off, stall watchdog).
- `MLXStudent`: mlx_lm in this process, greedy `batch_generate` over items at the same turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio

from factory.defaults import DEFAULTS, resolve
from factory.errors import ConfigError
from factory.pool import Pool, PoolError
from factory.prompts import estimate_tokens
from factory.teachers.base import TeacherRequest
from factory.teachers.openai_compat import OpenAITeacher

if TYPE_CHECKING:
    from factory.evaluate.suite import EvalItem

# The students' own knobs (DEFAULTS' eval_* keys); the pool's (retries, backoff, stall) are DEFAULTS' own.
STUDENT_DEFAULTS: dict[str, Any] = {
    key: DEFAULTS[f"eval_{key}"]
    for key in ("model", "max_tokens", "temperature", "concurrency", "batch_size", "down_after")
}


@dataclass
class Transcript:
    """One item's conversation with the student: the student's replies interleaved with the user turns."""

    item_id: str
    messages: list[dict[str, str]]  # system, user1, assistant1, user2, assistant2, ...
    finish_reasons: list[str | None] = field(default_factory=list)  # one per assistant reply
    error: str | None = None  # transport failure after retries: scored as an error, not dropped


class Student(Protocol):
    """A model that answers suite items turn by turn."""

    name: str  # the URL, or the model path (+ adapter)

    def settings(self) -> dict[str, Any]:
        """The decoding settings, for the eval manifest."""
        ...

    async def run(self, items: list[EvalItem], on_done: Callable[[Transcript], None]) -> None:
        """Answer every item; call on_done once per item, in completion order."""
        ...


class Reply(NamedTuple):
    """One generated reply: its text, why it ended ("stop" or "length"), and its token ids."""

    text: str
    finish_reason: str
    token_ids: list[int]


def _opening(item: EvalItem) -> list[dict[str, str]]:
    return [{"role": "system", "content": item.system}]


class OpenAIStudent:
    """A student behind an OpenAI-compatible server; items run concurrently, an item's turns in order."""

    def __init__(
        self,
        base_url: str,
        model: str = STUDENT_DEFAULTS["model"],
        max_tokens: int = STUDENT_DEFAULTS["max_tokens"],
        temperature: float = STUDENT_DEFAULTS["temperature"],
        concurrency: int = STUDENT_DEFAULTS["concurrency"],
        api_key: str | None = None,
        pool: Mapping[str, Any] | None = None,
    ):
        """`pool` overrides factory.defaults keys of the request pool (retries, backoff_base, ...)."""
        self.name = base_url
        self.base_url = base_url
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = max(1, concurrency)
        self.api_key = api_key
        overrides = {"down_after": STUDENT_DEFAULTS["down_after"], **(pool or {})}
        try:
            self.pool_settings = resolve({**overrides, "concurrency": self.concurrency})
        except KeyError as exc:
            raise ConfigError(f"student pool settings: {exc.args[0]}; see factory/defaults.py") from exc

    def settings(self) -> dict[str, Any]:
        """Decoding settings and the retry policy, as sent; no seed or response_format is ever sent."""
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": self.pool_settings["stream"],
            "concurrency": self.concurrency,
            "retries": self.pool_settings["retries"],
        }

    async def run(self, items: list[EvalItem], on_done: Callable[[Transcript], None]) -> None:
        """Answer every item through one pool; a failed item gets Transcript.error, the others go on."""
        # OpenAITeacher sends only model, messages, max_tokens, temperature (and stream): never
        # `seed`, which turns mlx_lm.server's batching off, nor `response_format`.
        teacher = OpenAITeacher(
            self.base_url,
            model=self.model,
            api_key=self.api_key,
            stream=self.pool_settings["stream"],
            timeout=self.pool_settings["request_timeout"],
        )
        items_in_flight = anyio.CapacityLimiter(self.concurrency)
        try:
            async with Pool(teacher, self.pool_settings) as pool, anyio.create_task_group() as group:
                for item in items:
                    group.start_soon(self._answer, pool, items_in_flight, item, on_done)
        finally:
            await teacher.aclose()

    async def _answer(
        self,
        pool: Pool,
        items_in_flight: anyio.CapacityLimiter,
        item: EvalItem,
        on_done: Callable[[Transcript], None],
    ) -> None:
        # Capping items, not just requests, finishes started items first, so results stream out.
        async with items_in_flight:
            transcript = await self._converse(pool, item)
        on_done(transcript)

    async def _converse(self, pool: Pool, item: EvalItem) -> Transcript:
        messages = _opening(item)
        finish: list[str | None] = []
        turns = len(item.user_turns)
        for index, user in enumerate(item.user_turns):
            prompt = [*messages, {"role": "user", "content": user}]
            request = TeacherRequest(
                task_id=f"{item.id}#{index + 1}",
                messages=prompt,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                est_tokens=estimate_tokens(prompt, self.max_tokens),
            )
            try:
                # The task argument only matters to the built-in teacher; OpenAITeacher ignores it.
                reply = await pool.complete(request, None)  # type: ignore[arg-type]
            except PoolError as exc:
                # The unanswered user turn is left out: messages always end on a student reply.
                error = f"turn {index + 1} of {turns}: {exc}"
                return Transcript(item.id, messages, finish, error)
            messages = [*prompt, {"role": "assistant", "content": reply.text}]
            finish.append(reply.finish_reason)
        return Transcript(item.id, messages, finish)


class MLXStudent:
    """A local mlx_lm model (+ LoRA adapter) decoded greedily in this process, batched by turn."""

    def __init__(
        self,
        model_path: str | Path,
        adapter_path: str | Path | None = None,
        max_tokens: int = STUDENT_DEFAULTS["max_tokens"],
        batch_size: int = STUDENT_DEFAULTS["batch_size"],
    ):
        self.model_path = Path(model_path)
        self.adapter_path = None if adapter_path is None else Path(adapter_path)
        self.max_tokens = max_tokens
        self.batch_size = max(1, batch_size)
        self.name = str(self.model_path) + (f" + {self.adapter_path}" if self.adapter_path else "")
        self._loaded: tuple[Any, Any] | None = None

    def settings(self) -> dict[str, Any]:
        """Decoding settings: greedy, so temperature 0; the batch size is recorded (padding is per batch)."""
        return {
            "backend": "mlx",
            "model": str(self.model_path),
            "adapter": None if self.adapter_path is None else str(self.adapter_path),
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "sampler": "greedy",
            "batch_size": self.batch_size,
        }

    def load(self) -> tuple[Any, Any]:
        """Load (once) the model with its adapter, and the tokenizer."""
        if self._loaded is None:
            import mlx_lm  # heavy; only an MLX student needs it

            adapter = None if self.adapter_path is None else str(self.adapter_path)
            model, tokenizer = mlx_lm.load(str(self.model_path), adapter_path=adapter)
            self._loaded = (model, tokenizer)
        return self._loaded

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Reply]:
        """Greedy replies to conversations that end on a user turn, generated as one batch."""
        from mlx_lm.generate import batch_generate

        model, tokenizer = self.load()
        prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        # Batch sizes fixed here, not left to BatchGenerator's own defaults: padding depends on
        # which prompts share a batch, and the same batches give the same text on every run.
        result = batch_generate(
            model,
            tokenizer,
            prompts,
            max_tokens=self.max_tokens,
            return_token_ids=True,
            prefill_batch_size=self.batch_size,
            completion_batch_size=self.batch_size,
        )
        # batch_generate drops the end-of-turn token, so a reply that stopped is shorter than max_tokens.
        return [
            Reply(text, "length" if len(ids) >= self.max_tokens else "stop", ids)
            for text, ids in zip(result.texts, result.token_ids, strict=True)
        ]

    async def run(self, items: list[EvalItem], on_done: Callable[[Transcript], None]) -> None:
        """Answer items batch_size at a time; all items of a batch advance one turn per call."""
        self.load()
        # Items with as many turns share batches, so no batch runs on with a few long items;
        # the sort is stable, so the batches are the same on every run.
        ordered = sorted(items, key=lambda item: len(item.user_turns))
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            transcripts = [Transcript(item.id, _opening(item), []) for item in batch]
            for turn in range(max(len(item.user_turns) for item in batch)):
                active = [i for i, item in enumerate(batch) if turn < len(item.user_turns)]
                for i in active:
                    transcripts[i].messages.append({"role": "user", "content": batch[i].user_turns[turn]})
                replies = self.generate([transcripts[i].messages for i in active])
                for i, reply in zip(active, replies, strict=True):
                    transcripts[i].messages.append({"role": "assistant", "content": reply.text})
                    transcripts[i].finish_reasons.append(reply.finish_reason)
                # Generation runs on this thread (MLX streams belong to the thread that made them);
                # yield between batches so a progress display can redraw.
                await anyio.sleep(0)
            for transcript in transcripts:
                on_done(transcript)


def make_student(spec: str, adapter: str | None = None, **settings: Any) -> Student:
    """An http(s) URL -> OpenAIStudent; a model folder -> MLXStudent. Unset (None) settings take defaults."""
    given = {k: v for k, v in settings.items() if v is not None}
    if spec.startswith(("http://", "https://")):
        if adapter is not None:
            raise ConfigError(
                f"--adapter {adapter} cannot be sent to the server at {spec}: start the server with it "
                f"(`mlx_lm.server --model <model> --adapter-path {adapter}`) and leave --adapter out"
            )
        unknown = set(given) - {"model", "max_tokens", "temperature", "concurrency", "api_key", "pool"}
        if unknown:
            raise ConfigError(f"settings {sorted(unknown)} do not apply to a server student ({spec})")
        return OpenAIStudent(spec, **given)
    folder = Path(spec)
    if not folder.is_dir():
        raise ConfigError(
            f"student {spec!r} is neither an http(s) URL (an OpenAI-compatible server, ending in /v1) "
            "nor a model folder (config.json + weights)"
        )
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(
            f"adapter folder {adapter} has no adapter_config.json: pass the folder `factory train` "
            "or mlx_lm.lora wrote (with adapters.safetensors and adapter_config.json)"
        )
    temperature = given.pop("temperature", 0.0)
    if temperature != 0.0:
        raise ConfigError(f"an MLX student decodes greedily; temperature {temperature} is not supported")
    unknown = set(given) - {"max_tokens", "batch_size"}
    if unknown:
        raise ConfigError(f"settings {sorted(unknown)} do not apply to a local MLX student ({spec})")
    return MLXStudent(folder, adapter, **given)
