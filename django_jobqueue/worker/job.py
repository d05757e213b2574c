"""The ``job`` object a handler receives: Joystick's explicit calls plus Disque's touch.

Every call checks the claim token (through the engine's scripts): a worker
that lost its claim can change nothing, and the call says so by returning False.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from ..engine.errortext import safe_str
from ..engine.exceptions import JobCancelled
from ..engine.progress import ProgressReporter
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob, Outcome
from ..options import seconds_to_ms

if TYPE_CHECKING:
    from ..registry import JobDefinition


# The longest a handler's `job.cancelled` goes without a look in Redis.
CANCEL_CHECK_S = 1.0


class JobAlreadyFinished(RuntimeError):
    """A second finishing call (completed, failed, requeue, delete, nack) on one claim."""


class Job:
    """One claimed run of a job, as the handler sees it."""

    def __init__(self, queue: RedisJobQueue, claimed: ClaimedJob, definition: JobDefinition | None = None) -> None:
        self._queue = queue
        self._claimed = claimed
        self.definition = definition
        self._lock = threading.Lock()
        # What the handler decided explicitly: None until one of the calls below.
        self.outcome: str | None = None
        self.lost_claim = False
        # Cancellation (see `cancelled`): asked already when claimed, or heard since.
        self._cancelled = bool(claimed.fields.get("cancel_requested_ms"))
        self._cancel_checked = time.monotonic()
        self._progress: ProgressReporter | None = None  # made by the first progress() call
        self._progress_ended = False

    # What the handler may read.
    @property
    def id(self) -> str:
        return self._claimed.id

    @property
    def name(self) -> str:
        return self._claimed.name

    @property
    def queue(self) -> str:
        return self._queue.queue_name

    @property
    def payload(self) -> Any:
        return self._claimed.payload

    @property
    def attempts(self) -> int:
        return self._claimed.attempts

    @property
    def max_attempts(self) -> int:
        return self._claimed.max_attempts

    @property
    def claim_token(self) -> str:
        return self._claimed.claim_token

    @property
    def fields(self) -> dict[str, str]:
        """The job hash as it was when claimed."""
        return dict(self._claimed.fields)

    @property
    def claimed(self) -> ClaimedJob:
        return self._claimed

    def __repr__(self) -> str:
        return f"<Job {self.name or '?'} {self.id} attempt {self.attempts}>"

    # Cancellation (docs/cancellation.md).
    @property
    def cancelled(self) -> bool:
        """Whether the job's cancellation was asked (``cancel()``). Told at
        once by the worker's cancellation listener; else looked up in Redis
        when asked, at most once every CANCEL_CHECK_S (no look-up for a
        handler that never asks). A Redis error reads as not cancelled."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CHECK_S:
            self._cancel_checked = now
            try:
                self._cancelled = self._queue.cancel_requested(self.id)
            except Exception:  # noqa: BLE001 - asking must never fail the job
                return False
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled if the job's cancellation was asked: let it
        propagate, and the worker ends the job ``cancelled`` (not failed, never retried)."""
        if self.cancelled:
            raise JobCancelled(f"job {self.id} was cancelled")

    def cancel_heard(self) -> None:
        """The worker heard the job's cancellation asked (worker/cancels.py)."""
        self._cancelled = True

    def _finish(self, outcome: str) -> None:
        # The last progress report is written while the claim is still ours.
        self.end_progress()
        with self._lock:
            if self.outcome is not None:
                raise JobAlreadyFinished(f"{self!r} was already {self.outcome}")
            self.outcome = outcome

    def _record(self, result: Outcome) -> bool:
        if result in (Outcome.NOT_OWNER, Outcome.MISSING):
            self.lost_claim = True
            return False
        return True

    # Joystick's calls.
    def completed(self, result: Any = None) -> bool:
        """Finish successfully with ``result`` (JSON). False: the claim was lost."""
        self._finish("completed")
        keep = self._claimed.fields.get("keep_result") != "0"
        return self._record(self._queue.complete_outcome(self._claimed, result, keep_result=keep))

    def failed(self, error: Any = "failed", *, traceback: str = "") -> bool:
        """Fail this attempt: retried by the job's policy, else dead-lettered."""
        self._finish("failed")
        from .retry import retry_delay_ms

        # Kept for the worker's log line: the error, and the wait if it is retried.
        self.fail_error = safe_str(error)
        self.retry_delay_ms = retry_delay_ms(self.definition, self._queue, self.attempts)
        outcome = self._queue.fail_outcome(
            self._claimed, self.fail_error, traceback=traceback, retry_delay_ms=self.retry_delay_ms
        )
        self.fail_result = outcome
        return self._record(outcome)

    def requeue(self, delay: float | None = None) -> bool:
        """Back to the queue (after ``delay`` seconds), as a new attempt later."""
        self._finish("requeued")
        delay_ms = 0 if delay is None else seconds_to_ms("delay", delay)
        return self._record(self._queue.requeue(self._claimed, delay_ms=delay_ms))

    def delete(self) -> bool:
        """Remove the job for good."""
        self._finish("deleted")
        return self._record(self._queue.delete(self.id, self.claim_token))

    def nack(self, error: Any = None) -> bool:
        """Back to the queue now, without using up an attempt (counted in ``nacks``)."""
        self._finish("nacked")
        return self._record(
            self._queue.requeue(
                self._claimed,
                count_attempt=False,
                event="nacked",
                counter="nacks",
                error=None if error is None else safe_str(error),
            )
        )

    # Disque's WORKING.
    def touch(self, seconds: float | None = None) -> bool:
        """Extend the lease by the visibility timeout (or ``seconds``); never past the TTL."""
        lease_ms = None if seconds is None else seconds_to_ms("seconds", seconds, allow_zero=False)
        ok = self._queue.touch(self._claimed, lease_ms) is not None
        if not ok:
            self.lost_claim = True
        return ok

    # Async twins, for async handlers: the same calls on a thread of the
    # default executor, so that their Redis round trip never blocks the loop.
    async def acompleted(self, result: Any = None) -> bool:
        return await asyncio.to_thread(self.completed, result)

    async def afailed(self, error: Any = "failed", *, traceback: str = "") -> bool:
        return await asyncio.to_thread(self.failed, error, traceback=traceback)

    async def arequeue(self, delay: float | None = None) -> bool:
        return await asyncio.to_thread(self.requeue, delay)

    async def adelete(self) -> bool:
        return await asyncio.to_thread(self.delete)

    async def anack(self, error: Any = None) -> bool:
        return await asyncio.to_thread(self.nack, error)

    async def atouch(self, seconds: float | None = None) -> bool:
        return await asyncio.to_thread(self.touch, seconds)

    async def aprogress(self, fraction: float, message: str | None = None) -> None:
        await asyncio.to_thread(self.progress, fraction, message)

    # Progress (engine/progress.py: at most a few writes a second, the last report never lost).
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the run has got: ``fraction`` from 0 to 1 and an
        optional short ``message`` (cut to 200 characters). TypeError or
        ValueError for a bad value. Kept on the job and published as a
        ``progress`` event; a report within 0.25 s of the last write is written
        by the next report or when the run ends. A Redis error is logged, never
        raised: progress never fails a job."""
        if self._progress is None:
            self._progress = ProgressReporter(self._queue, self._claimed, self._lost_by_progress)
            if self._progress_ended:
                self._progress.end()  # nothing kept: it writes nothing, and ignores what follows
        self._progress.report(fraction, message)

    def end_progress(self) -> None:
        """Write the progress report still kept (the worker calls it as the
        handler returns, before the completion is recorded); later reports are ignored."""
        self._progress_ended = True
        if self._progress is not None:
            self._progress.end()

    def _lost_by_progress(self) -> None:
        self.lost_claim = True
