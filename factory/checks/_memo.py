"""Caches of the checks: per dialogue (dropped when `run_checks` returns) and lazily made attributes.

A reply, its sentences and the values of its state are not seen again by a later dialogue, so caching
them across calls only holds memory (a 2000-task run kept megabytes of old replies). `per_dialogue`
caches a pure function for the rules of one `run_checks` call, which calls `forget` when it is done;
what does repeat across dialogues (field paths, lexicon patterns) keeps its own small lru caches.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# The most entries one per-dialogue cache keeps: a guard for huge dialogues, never reached by usual ones.
DIALOGUE_CACHE = 1024
_CACHES: list[Any] = []


def per_dialogue(function: F) -> F:
    """`function` cached for the current dialogue: `forget` empties the cache when its checks end."""
    cached = lru_cache(maxsize=DIALOGUE_CACHE)(function)
    _CACHES.append(cached)
    return cached  # type: ignore[return-value]


def forget() -> None:
    """Drop what the per-dialogue caches hold (`run_checks` calls this after each dialogue)."""
    for cached in _CACHES:
        cached.cache_clear()


class lazy(Generic[T]):
    """`functools.cached_property` without its lock (Python 3.11 takes one on every first use, which
    costs more than most of the values the checks make); objects here belong to one call."""

    def __init__(self, function: Callable[[Any], T]):
        self.function, self.name = function, function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> lazy[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> T | lazy[T]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.function(instance)
        return value
