"""A worker's samples of the jobs it runs, sent to Redis for charts and metrics.

Runner threads note each run (a lock and a few additions); the maintenance
thread sends the counts every FLUSH_SECONDS (engine/samples.py: one script
call a queue, in one pipeline), and the worker sends the rest as it stops.
Nothing here runs user code, and a failed send keeps the counts for the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..engine import samples
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob

# Outcomes of a run whose handler was called, and whether it completed.
_RAN = {"completed": True, "failed": False, "retrying": False}


def due_ms(claimed: ClaimedJob) -> int | None:
    """When the job became due: enqueued, or its delay or backoff over."""
    due = None
    for name in ("enqueued_at_ms", "run_at_ms"):
        try:
            value = int(claimed.fields[name])
        except (KeyError, ValueError):
            continue
        due = value if due is None else max(due, value)
    return due


class Sampler:
    def __init__(
        self,
        queues: Sequence[RedisJobQueue],
        client: Callable[[], Any],
        *,
        every_s: float = samples.FLUSH_SECONDS,
        book: samples.SampleBook | None = None,
    ) -> None:
        self._queues = [(q.queue_name, q.keys) for q in queues]
        self._client = client
        self._every_s = every_s
        self.book = book or samples.SampleBook()
        self._last = time.monotonic()

    def ran(self, queue: RedisJobQueue, claimed: ClaimedJob, outcome: str, seconds: float, started_ms: float) -> None:
        """Note a run that ended with ``outcome`` after ``seconds``, begun at
        ``started_ms`` on the queue's clock (this machine's, unless the queue has its own)."""
        completed = _RAN.get(outcome)
        if completed is None:
            return  # deferred, handed back, lost its claim: the handler's run did not end it
        due = due_ms(claimed)
        # Clocks of two machines: a start a little before the due time is skew, not a wait.
        latency = max(0.0, (started_ms - due) / 1000) if due is not None else None
        self.book.ran(queue.queue_name, completed=completed, duration_s=seconds, latency_s=latency)

    def flush_due(self) -> None:
        """Send the counts when FLUSH_SECONDS have passed since the last send."""
        if time.monotonic() - self._last >= self._every_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        samples.flush(self._client(), self._queues, self.book)
