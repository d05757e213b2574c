"""Polling until a condition holds, bounded: never a sleep-and-assert."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """The first truthy value of ``predicate()``; AssertionError after ``timeout`` s.
    An exception from ``predicate`` ends the wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """As ``wait_for``, for servers starting or being killed: a Redis or socket
    error from ``predicate`` counts as "not yet" (and is named on timeout)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (redis.RedisError, OSError) as exc:  # a node still starting or just killed
            value, last_error = None, exc
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what}" + (f" (last: {last_error})" if last_error else "")
    )
