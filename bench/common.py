"""What every measured system shares: the Redis URL, the counter, the job body.

Every system runs the same no-op job: one Redis INCR of ``COUNTER`` on a
plain redis-py client of its own process (made on first use, so forked worker
children get their own connection). The latency job instead records the time
it started, for the harness to compare with the time it enqueued.
"""

from __future__ import annotations

import os
import time
from typing import Any

COUNTER = "bench:done"
STARTS = "bench:started"
URL_ENV = "BENCH_REDIS_URL"
# Read by bench/settings.py: the queue's GLOBAL_CONCURRENCY in our limited drain.
GLOBAL_CONCURRENCY_ENV = "BENCH_GLOBAL_CONCURRENCY"
# Our async drain: what each async handler awaits, and where the first handler
# to start in a worker process records the wall-clock time it started.
ASYNC_SLEEP_S = 0.1
ASYNC_FIRST_START = "bench:async-first-start"

_client: Any = None


def redis_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"{URL_ENV} is not set: the harness passes the private server's URL")
    return url


def client() -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(redis_url())
    return _client


def bump() -> None:
    """The no-op job: one INCR."""
    client().incr(COUNTER)


def mark_first_start() -> None:
    """The first async handler of the drain: record when it started (SET NX,
    so the earliest of the processes' first starts is kept)."""
    client().set(ASYNC_FIRST_START, repr(time.time()), nx=True)


def mark_start() -> None:
    """The latency job: record when it started (wall clock, shared by all processes)."""
    client().rpush(STARTS, repr(time.time()))
