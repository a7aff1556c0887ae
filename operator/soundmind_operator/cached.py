"""A memo for the pure, costly parts of a pass (built children, checked configurations)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def cached(maxsize: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`functools.lru_cache`, with misses computed one at a time. A burst of like objects asks for
    the same key from every pass thread at once: with a bare lru_cache each thread misses and
    computes it (composing verl's config, tens of milliseconds of the GIL, 32 times over); here the
    first computes and the others wait for its result."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        memo = functools.lru_cache(maxsize=maxsize)(function)
        lock = threading.Lock()

        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with lock:
                return memo(*args, **kwargs)

        call.cache_info = memo.cache_info  # type: ignore[attr-defined]
        call.cache_clear = memo.cache_clear  # type: ignore[attr-defined]
        return call

    return decorate
