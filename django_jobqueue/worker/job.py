"""The ``job`` object a handler receives: Joystick's explicit calls plus Disque's touch.

Every call checks the claim token (through the engine's scripts): a worker
that lost its claim can change nothing, and the call says so by returning False.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..engine.errortext import safe_str
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob, Outcome
from ..options import seconds_to_ms

if TYPE_CHECKING:
    from ..registry import JobDefinition


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

    def _finish(self, outcome: str) -> None:
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
