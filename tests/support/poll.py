"""Polling with a deadline: the only way tests wait for the cluster (no fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2, what: str = "") -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` seconds, naming ``what`` and the last value seen so a
    failing test says what the cluster looked like."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}; last value: {value!r}")
        time.sleep(interval)
