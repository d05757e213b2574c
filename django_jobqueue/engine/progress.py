"""A running job's progress: what its handler reported, checked and read back.

A handler reports how far it has got (``job.progress(0.42, message="page 42
of 100")``, worker/job.py); progress.lua keeps the last report on the job
hash (``progress``, ``progress_message``, ``progress_at_ms``,
``progress_attempt``) and publishes a ``progress`` event. ``Progress`` is that
report read back (``RedisJobQueue.progress(job_id)``, the admin, the
commands). Plain Python, no Django: the engine uses it.

``ProgressReporter`` (behind ``job.progress()``) writes a handler's reports
a few times a second at most. A handler may report progress in a tight loop (every row of a million-row
export). Each report is checked at once, on the handler's thread (a bad value
is the handler's bug: TypeError or ValueError right there), but written only
when WRITE_INTERVAL_S has passed since the last write: a report inside the
interval is kept in memory, and the next report after it, or the end of the
run (``end()``, before the job's completion or failure is recorded), writes
the latest one. So the last report is never lost, a loop costs Redis at most
1 / WRITE_INTERVAL_S writes a second, and no thread or timer is needed: the
writes are the handler's own calls.

What this costs: a report that is kept, not written, is a check of its value
and a lock (well under a microsecond). A report written is one script call
(progress.lua), on the handler's thread.

Progress is information, not the job's work: a write that fails (Redis
unreachable, a timeout) is logged as a warning, once per run, and the job goes
on; the value is kept and written by a later report, after ERROR_PAUSE_S, so
that a loop does not wait out a connection timeout on every report while Redis
is away. A write refused because the claim is no longer ours (the job was
reclaimed or deleted) marks the run's claim lost, as ``touch()`` does, and
writes nothing more.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from .errortext import cap_error
from .exceptions import JobQueueError
from .redact import mask_credentials
from .replies import ClaimedJob, Outcome

if TYPE_CHECKING:
    from .queue import RedisJobQueue

# A progress message is a status line, not a log: longer text is cut (its
# start kept). Short also keeps the job hash small: a value past 64 bytes makes
# Redis store the whole hash as a hash table rather than a listpack.
MAX_PROGRESS_MESSAGE_CHARS = 200

FIELDS = ("progress", "progress_message", "progress_at_ms", "progress_attempt")


def check_fraction(fraction: object) -> float:
    """``fraction`` as a float from 0 to 1: TypeError for what is not a real
    number (a bool, a string), ValueError for NaN or a number outside 0..1."""
    # float and int first: a handler may report in a tight loop, and the ABC
    # check is several times slower.
    if (
        type(fraction) is not float
        and type(fraction) is not int
        and (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real))
    ):
        raise TypeError(f"progress: the fraction must be a number from 0 to 1, not {type(fraction).__name__}")
    value = float(fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress: the fraction must be from 0 to 1, not {value!r}")
    return value


def check_message(message: object) -> str:
    """The message as stored: "" for None, text cut to MAX_PROGRESS_MESSAGE_CHARS."""
    if message is None:
        return ""
    if not isinstance(message, str):
        raise TypeError(f"progress: the message must be text or None, not {type(message).__name__}")
    return cap_error(message, MAX_PROGRESS_MESSAGE_CHARS)


def fraction_text(fraction: float) -> str:
    """The fraction as the script takes it (repr: the shortest exact decimal)."""
    return repr(fraction)


@dataclass(frozen=True)
class Progress:
    """The last progress a job's handler reported."""

    fraction: float  # 0..1
    message: str  # "" when the report had none
    updated_at_ms: int  # when Redis recorded it (the queue's clock: the Redis server's)
    attempt: int  # the job's attempt whose run reported it

    @property
    def percent(self) -> int:
        """The fraction in whole percent, rounded down (100 only when done)."""
        return min(100, math.floor(self.fraction * 100 + 1e-9))

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self.updated_at_ms / 1000, tz=UTC)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str | None]) -> Progress | None:
        """The progress held in job hash fields, or None when none was reported
        (or what is there does not read as one: a hash edited by hand)."""
        text = fields.get("progress")
        if not text:
            return None
        try:
            fraction = check_fraction(float(text))
            at_ms = int(fields.get("progress_at_ms") or 0)
            attempt = int(fields.get("progress_attempt") or 0)
        except (TypeError, ValueError):
            return None
        return cls(fraction, fields.get("progress_message") or "", at_ms, attempt)


logger = logging.getLogger("django_jobqueue")

# At most 4 writes a second per running job (and one more as it ends).
WRITE_INTERVAL_S = 0.25
# After a failed write, the next is tried this much later.
ERROR_PAUSE_S = 5.0


class ProgressReporter:
    """The progress reports of one run (one claim) of a job, written as the
    module's docstring says."""

    def __init__(
        self,
        queue: RedisJobQueue,
        claimed: ClaimedJob,
        on_lost_claim: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._claimed = claimed
        self._on_lost_claim = on_lost_claim
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: tuple[float, str] | None = None
        self._next_write = float("-inf")
        self._ended = False
        self._warned = False
        self.writes = 0  # script calls sent (for tests and the curious)

    def report(self, fraction: object, message: object = None) -> None:
        value = check_fraction(fraction)
        text = check_message(message)
        with self._lock:
            if self._ended:
                return
            self._pending = (value, text)
            now = self._clock()
            if now >= self._next_write:
                self._write(now)

    def end(self) -> None:
        """The run ends: write the report still kept, if any; later reports
        are ignored (the claim is about to be, or was, given up)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._pending is not None:
                self._write(self._clock())

    def _write(self, now: float) -> None:
        assert self._pending is not None
        value, text = self._pending
        try:
            outcome = self._queue.report_progress(self._claimed, value, text)
        except (RedisError, JobQueueError) as exc:
            # Kept: a later report (or the end) writes it, or a newer one.
            self._next_write = now + ERROR_PAUSE_S
            if not self._warned:
                self._warned = True
                logger.warning(
                    "job %s (%s): progress not recorded: %s: %s; the job goes on",
                    self._claimed.id,
                    self._claimed.name,
                    type(exc).__name__,
                    mask_credentials(str(exc)),
                )
            return
        self.writes += 1
        self._pending = None
        self._next_write = now + WRITE_INTERVAL_S
        if outcome in (Outcome.NOT_OWNER, Outcome.MISSING):
            self._ended = True
            self._on_lost_claim()
