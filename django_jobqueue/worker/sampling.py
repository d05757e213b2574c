"""A worker's samples of the jobs it runs, sent to Redis for charts and metrics.

Runner threads note each run (a lock and a few additions); the maintenance
thread sends the counts every FLUSH_SECONDS (engine/samples.py: one script
call a queue, in one pipeline), and the worker sends the rest as it stops.
Nothing here runs user code, and a failed send keeps the counts for the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..engine import samples
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob

logger = logging.getLogger("django_jobqueue.worker")

# Outcomes of a run whose handler was called, and whether it completed.
_RAN = {"completed": True, "failed": False, "retrying": False}


class Sampler:
    """Notes each run in a SampleBook and sends it with a SampleSender."""

    def __init__(
        self,
        worker_id: str,
        queues: Sequence[RedisJobQueue],
        client: Callable[[], Any],
        *,
        every_s: float = samples.FLUSH_SECONDS,
    ) -> None:
        self._client = client
        self._every_s = every_s
        self.book = samples.SampleBook()
        self.sender = samples.SampleSender(worker_id, [(q.queue_name, q.keys) for q in queues])
        self._last = time.monotonic()
        self._sending = threading.Lock()

    def ran(
        self, queue: RedisJobQueue, claimed: ClaimedJob, outcome: str, seconds: float, started_local_ms: float
    ) -> None:
        """Note a run that ended with ``outcome`` after ``seconds``, begun at
        ``started_local_ms`` on this machine's clock. Never raises: a runner
        thread calls it, and a sample is not worth a runner."""
        try:
            self._note(queue, claimed, outcome, seconds, started_local_ms)
        except Exception:  # noqa: BLE001
            logger.warning("job %s: its run could not be noted in the samples", claimed.id, exc_info=True)

    def _note(
        self, queue: RedisJobQueue, claimed: ClaimedJob, outcome: str, seconds: float, started_local_ms: float
    ) -> None:
        completed = _RAN.get(outcome)
        if completed is None:
            return  # deferred, handed back, lost its claim: the handler's run did not end it
        # Job times are stamped on the Redis server's clock (or the queue's own, in tests).
        if queue.clock is not None:
            started_ms = float(queue.clock()) - seconds * 1000
        else:
            started_ms = self.sender.server_ms(started_local_ms)
        due = samples.due_ms(claimed.fields.get("enqueued_at_ms"), claimed.fields.get("run_at_ms"))
        # A start a little before its due time is the error of the clock estimate, not a wait.
        latency = max(0.0, (started_ms - due) / 1000) if due is not None else None
        self.book.ran(
            queue.queue_name,
            completed=completed,
            duration_s=seconds,
            latency_s=latency,
            at_ms=started_ms + seconds * 1000,
        )

    def flush_due(self) -> None:
        """Send the counts when FLUSH_SECONDS have passed since the last send."""
        if time.monotonic() - self._last >= self._every_s:
            self.flush()

    def flush(self) -> None:
        # One send at a time: the sender numbers its batches (a worker sends
        # from its maintenance thread only; the demo's pool threads each may).
        with self._sending:
            self._last = time.monotonic()
            self.sender.flush(self._client(), self.book)
        if self.sender.broken:
            logger.warning(
                "samples of %s not recorded: a samples key holds another type (see docs/observability.md)",
                ", ".join(sorted(self.sender.broken)),
            )

    def flush_last(self) -> None:
        """The send as the worker stops: once, and whatever goes wrong, the
        worker's shutdown goes on."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001
            logger.warning("the last samples were not sent: %s", exc)
