"""RedisHealth: a worker's view of Redis going away and coming back.

The runner threads, the heartbeat, the sweep and the shutdown share it: the
outage is logged once when it starts and once when it ends, calls that must
land are retried with backoff meanwhile, and the sweep asks whether Redis was
away lately before it takes another worker for lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("django_jobqueue.worker")

T = TypeVar("T")

# The longest pause between tries while Redis is unavailable.
REDIS_RETRY_MAX_S = 1.0

# Redis cannot serve us now: wait (logging), retry. A read-only replica may be
# promoted by a failover, a full Redis (noeviction) may be emptied.
CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
)


class RedisHealth:
    """Whether Redis is away now, since when, and when it last came back."""

    def __init__(
        self,
        stopping: threading.Event,
        *,
        signalled: Callable[[], bool],
        on_failure: Callable[[], None],
    ) -> None:
        self._stopping = stopping  # set: the worker is shutting down
        self._signalled = signalled  # True once a signal asked the worker to stop
        self._on_failure = on_failure  # told of each failed call (the fetcher re-checks what it holds)
        self.down_since: float | None = None
        self.back_at = float("-inf")  # when Redis last came back after an outage

    def with_redis(self, fn: Callable[[], T], what: str, attempts: int | None = None) -> T | None:
        """Call ``fn`` until Redis answers, with backoff: its result, or None
        when ``attempts`` ran out (or the worker stops while Redis is away)."""
        delay, tried = 0.2, 0
        while True:
            try:
                return fn()
            except CONNECTION_ERRORS as exc:
                tried += 1
                if attempts is not None and tried >= attempts:
                    logger.error("%s failed, giving up: %s", what, exc)
                    return None
                logger.warning("%s: Redis unavailable (%s); retrying in %.1f s", what, exc, delay)
                if self._stopping.wait(delay) and attempts is None and self._signalled():
                    return None
                delay = min(delay * 2, REDIS_RETRY_MAX_S)

    def note_down(self, exc: Exception) -> None:
        if self.down_since is None:
            # Logged once; no backoff here: renewals must keep their pace.
            self.down_since = time.monotonic()
            logger.error("Redis unavailable: %s; retrying", exc)

    def down_pause(self, exc: Exception) -> None:
        """A runner's call failed: note the outage and pause before its next try."""
        self._on_failure()
        self.note_down(exc)
        waited = time.monotonic() - (self.down_since or time.monotonic())
        # Short pauses (a failed connect is cheap): a runner resumes within
        # about REDIS_RETRY_MAX_S of Redis answering again.
        self._stopping.wait(min(REDIS_RETRY_MAX_S, 0.1 * (2 ** min(6, int(waited)))))

    def up(self) -> None:
        if self.down_since is not None:
            logger.warning("Redis is back after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
            self.back_at = time.monotonic()

    def away_lately(self, window_s: float) -> bool:
        """Redis is away now, or came back less than ``window_s`` ago."""
        return self.down_since is not None or time.monotonic() - self.back_at < window_s
