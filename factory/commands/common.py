"""Flags shared by several subcommands, and turning parsed flags into resolved settings."""

from __future__ import annotations

import argparse
from typing import Any

from factory.defaults import DEFAULTS, resolve


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that choose and tune the teacher and the pool."""
    group = parser.add_argument_group("teacher and pool")
    group.add_argument(
        "--teacher",
        help="'builtin' (offline, default) or an OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1",
    )
    group.add_argument(
        "--model", help="model name (default: the first /v1/models lists; default_model for mlx_lm.server)"
    )
    group.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY or a placeholder)")
    group.add_argument("--temperature", type=float)
    group.add_argument("--max-tokens", type=int, help=f"completion budget (default {DEFAULTS['max_tokens']})")
    group.add_argument("--stream", action=argparse.BooleanOptionalAction, help="stream replies (default on)")
    group.add_argument(
        "--concurrency", type=int, help=f"in-flight request cap (default {DEFAULTS['concurrency']})"
    )
    group.add_argument("--rpm", type=int, help="requests-per-minute limit (default none)")
    group.add_argument("--tpm", type=int, help="tokens-per-minute limit (default none)")
    group.add_argument("--retries", type=int, help=f"attempts per request (default {DEFAULTS['retries']})")
    group.add_argument("--request-timeout", type=float, help="seconds; backstop for one request")
    group.add_argument("--stall-min", type=float, help="seconds without progress before a stall, at least")


def settings_from_args(args: argparse.Namespace, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve settings: flags given > `stored` (a resumed run's run.json) > DEFAULTS."""
    overrides = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key, None) is not None}
    base = {key: value for key, value in (stored or {}).items() if key in DEFAULTS}
    base.pop("api_key", None)
    return resolve({**base, **overrides})
