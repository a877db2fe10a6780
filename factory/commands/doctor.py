"""Check a teacher end to end: reachable, models listed, one real chat call, and whether the reply parses."""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio
import openai
from rich.console import Console

from factory.checks import run_checks
from factory.commands.common import add_teacher_arguments, settings_from_args
from factory.errors import FactoryError, TeacherReplyError
from factory.parse import parse_turns
from factory.plan import parse_mix, plan_tasks
from factory.prompts import estimate_tokens, render_request
from factory.seeds import load_worlds
from factory.state import render_state
from factory.teachers import make_teacher
from factory.teachers.base import TeacherRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the doctor flags."""
    parser.add_argument("--seeds-dir", help="folder of state templates (default seeds/)")
    add_teacher_arguments(parser)


def _explain_http_error(exc: Exception, url: str) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return (
            f"the call to {url} timed out: the model may still be loading; "
            "try again, or raise --request-timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        return f"the connection to {url} failed mid-call: {exc}"
    if isinstance(exc, openai.NotFoundError):
        return f"{url} has no such model or route: check --model and that the URL ends in /v1"
    if isinstance(exc, openai.AuthenticationError):
        return "the server refused the key: pass --api-key or set OPENAI_API_KEY"
    if isinstance(exc, openai.APIStatusError):
        return f"the server answered HTTP {exc.status_code}: {exc.message}"
    return f"unexpected error: {exc!r}"


async def diagnose(settings: dict[str, Any], console: Console) -> bool:
    """Run the checks in order, printing each; return True when the teacher is usable."""
    teacher = make_teacher(settings)
    url = settings["teacher"]

    def say(passed: bool, text: str) -> None:
        console.print(
            f"[{'green' if passed else 'red'}]{'ok ' if passed else 'FAIL'}[/] {text}", highlight=False
        )

    try:
        if url != "builtin":
            await teacher.probe()
            say(True, f"{url} answers /v1/models")
            model = await teacher.resolve_model()
            say(True, f"model: {model}")
        task = plan_tasks(load_worlds(settings["seeds_dir"]), 1, 0, parse_mix("obedience=1"))[0]
        prompt = render_request(task)
        request = TeacherRequest(
            task.id,
            prompt.messages,
            settings["max_tokens"],
            settings["temperature"],
            estimate_tokens(prompt.messages, settings["max_tokens"]),
        )
        started = time.monotonic()
        try:
            reply = await teacher.complete(request, task, lambda: None)
        except openai.OpenAIError as exc:
            say(False, _explain_http_error(exc, url))
            return False
        say(
            True,
            f"chat call answered in {time.monotonic() - started:.1f}s "
            f"({reply.completion_tokens} tokens, finish_reason={reply.finish_reason})",
        )
        try:
            turns = parse_turns(reply.text, reply.finish_reason, task)
            say(True, f"the reply parses into {len(turns)} turns")
        except TeacherReplyError as exc:
            hint = " (raise --max-tokens)" if exc.reason == "truncated" else ""
            say(False, f"the reply does not parse: {exc}{hint}; the factory will ask again, then reject")
            console.print(reply.text[:800], highlight=False, markup=False)
            return False
        violations = run_checks(
            [{"role": "system", "content": render_state(task.state)}, *turns], task, task.state
        )
        for v in violations:
            say(False, f"check {v['rule']}: {v['detail']}")
        if not violations:
            say(True, "the sample dialogue passes every check")
        return True  # the teacher works; failed checks only mean that sample is rejected
    except FactoryError as exc:
        say(False, str(exc))
        return False
    finally:
        await teacher.aclose()


def main(args: argparse.Namespace) -> int:
    """Run `factory doctor`."""
    usable = anyio.run(diagnose, settings_from_args(args), Console())
    return 0 if usable else 1
