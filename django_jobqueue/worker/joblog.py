"""The worker's log line for each job, and the fields a log shipper reads from it.

Every job a runner finishes is one line of the ``django_jobqueue.worker``
logger, in one shape, so that a person can grep it and act on it::

    job send_mail 01ab on queue emails: attempt 1/3 completed, ran 1.6 ms
    job send_mail 01ab on queue emails: attempt 2/3 failed after running 1.6 ms: ValueError: bad address;
        retrying in 4.0 s
    job send_mail 01ab on queue emails: attempt 3/3 failed after running 1.6 ms: ValueError: bad address;
        dead-lettered (no attempts left)

(each on one line; wrapped here). Each record also carries the line's parts as attributes (FIELDS), the way
``logging``'s ``extra`` does, for a JSON formatter (``django_jobqueue.logformat``).
A failed attempt's record carries its traceback when the logger is enabled
for DEBUG (``jobq_worker -v 2``): the same capped text the job's hash keeps.

A completed job's line is on the worker's hot path. Its record (JobLine) is
made without logging's search of the call stack for its caller, and its
fields are made from the line's arguments only when a formatter or a filter
first reads them: with the worker's batching handler, at flush time, off the
runner's thread. Failures are rarer and build their records in full.

Writing a line never raises: a project's filter, handler or record factory
that does (a bug in it) must not end the runner, the shutdown or the hooks
thread that writes it. Such a line goes to ``logging.lastResort`` instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.errortext import cap_error, format_traceback, safe_str
from ..engine.replies import Outcome
from ..terminal import safe_text

if TYPE_CHECKING:
    from ..engine.replies import ClaimedJob

logger = logging.getLogger("django_jobqueue.worker")

# The attributes a job's record may carry, in the order a JSON line shows them.
FIELDS = (
    "job_id",
    "job_name",
    "queue",
    "attempt",
    "max_attempts",
    "outcome",
    "duration_ms",
    "next_action",
    "retry_in_s",
    "exc_type",
    "exc_message",
    "reason",
)
# Those of a finished job's line (FINISHED_LINE), made from its arguments.
_LINE_FIELDS = frozenset(FIELDS[:7])
# An error quoted in a line: enough to act on; the job's hash keeps up to
# MAX_ERROR_CHARS of it, and the traceback (errortext.py).
LINE_ERROR_CHARS = 1000

_PREFIX = "job %s %s on queue %s: attempt %d/%s "
# A job that finished without failing: outcome and the time its runner spent on it.
FINISHED_LINE = _PREFIX + "%s, ran %.1f ms"
# Anything else: what happened to this attempt, then what happens to the job.
_EVENT_LINE = _PREFIX + "%s; %s"


class JobLine(logging.LogRecord):
    """The record of a finished job's line (FINISHED_LINE), whose fields are
    made from its arguments when first needed: by ``getMessage()``, which
    ``logging.Formatter.format`` calls first, or when one is read (a filter).
    The commands' own text format shows none, and skips them (logsetup.py)."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        _add_line_fields(self)
        return super().getMessage()

    def __getattr__(self, name: str) -> Any:
        # Called only for an attribute the record does not have yet.
        if name in _LINE_FIELDS and "args" in self.__dict__:
            _add_line_fields(self)
            return self.__dict__[name]
        raise AttributeError(name)


def _add_line_fields(record: logging.LogRecord) -> None:
    args = record.args
    if "job_id" in record.__dict__ or not isinstance(args, tuple) or len(args) != 7:
        return
    name, job_id, queue, attempt, max_attempts, outcome, ms = args
    record.__dict__.update(
        job_id=job_id,
        job_name=name,
        queue=queue,
        attempt=attempt,
        max_attempts=max_attempts if isinstance(max_attempts, int) else None,
        outcome=outcome,
        duration_ms=round(ms, 3) if isinstance(ms, float) else ms,
    )


def log_finished(level: int, claimed: ClaimedJob, queue: str, outcome: str, ms: float) -> None:
    """The line of a job that finished without failing (completed, requeued,
    ...). The caller checks ``logger.isEnabledFor(level)`` first."""
    args = (claimed.name or "-", claimed.id, queue, claimed.attempts, claimed.max_attempts or "unlimited", outcome, ms)
    try:
        factory = logging.getLogRecordFactory()
        if factory is logging.LogRecord:
            logger.handle(JobLine(logger.name, level, __file__, 0, FINISHED_LINE, args, None, "log_finished"))
            return
        # The project makes its own records (to add attributes of its own): use them.
        record = factory(logger.name, level, __file__, 0, FINISHED_LINE, args, None, "log_finished")
        _add_line_fields(record)
        logger.handle(record)
    except Exception as exc:  # noqa: BLE001 - see _refused
        _refused(level, FINISHED_LINE, args, exc)


def log_event(
    level: int,
    claimed: ClaimedJob,
    queue: str,
    happened: str,
    next_text: str,
    fields: dict[str, Any],
    *,
    exc: BaseException | None = None,
    traceback: str = "",
) -> None:
    """One line about a job: ``job NAME ID on queue Q: attempt A/M <happened>;
    <next_text>``, with ``fields`` (and the job's own) on its record and, when
    the logger is enabled for DEBUG, ``exc`` with its ``traceback`` text."""
    if not logger.isEnabledFor(level):
        return
    name = claimed.name or "-"
    args = (name, claimed.id, queue, claimed.attempts, claimed.max_attempts or "unlimited", happened, next_text)
    extra = {
        "job_id": claimed.id,
        "job_name": name,
        "queue": queue,
        "attempt": claimed.attempts,
        "max_attempts": claimed.max_attempts or None,
        **fields,
    }
    exc_info = None
    exc_text = None
    if exc is not None and logger.isEnabledFor(logging.DEBUG):
        exc_info = (type(exc), exc, exc.__traceback__)
        # The formatters print exc_text as it is: the capped text the job's
        # hash keeps (a huge message would otherwise fill the log), escaped.
        exc_text = safe_text((traceback or format_traceback(exc)).rstrip("\n"), multiline=True)
    try:
        record = logger.makeRecord(logger.name, level, __file__, 0, _EVENT_LINE, args, exc_info, "log_event")
        # Set as makeRecord's ``extra`` would, without its refusal of a name the
        # project's record factory may use too: a log line must never raise.
        record.__dict__.update(extra)
        if exc_text is not None:
            record.exc_text = exc_text
        logger.handle(record)
    except Exception as exc:  # noqa: BLE001 - see _refused
        _refused(level, _EVENT_LINE, args, exc)


def _refused(level: int, msg: str, args: tuple[Any, ...], error: Exception) -> None:
    """A job's line the project's logging raised on (a filter, a handler or a
    record factory with a bug): the thread that writes it (a runner, the
    shutdown, the hooks thread) goes on all the same. The line goes to
    logging's last resort handler (stderr; warnings and errors only), saying
    why; else it is dropped."""
    handler = logging.lastResort
    if handler is None or level < handler.level:
        return
    try:
        why = f"{exception_name(error)}: {safe_str(error)}"
        text = safe_text(f"{msg % args} [logging raised {why}]")
        handler.handle(logging.LogRecord(logger.name, level, __file__, 0, text, None, None))
    except Exception:  # noqa: BLE001, S110 - nothing is left to report it to
        pass


def exception_name(exc: BaseException) -> str:
    """``ValueError``, or ``smtplib.SMTPServerDisconnected`` outside the builtins."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def line_text(text: str) -> str:
    """Stored or raised text, fit for a line: capped, control characters
    (newlines included) shown as escapes."""
    return safe_text(cap_error(text, LINE_ERROR_CHARS))


@dataclass(slots=True)
class Failure:
    """A failed attempt, for its line: what went wrong, then (``decide``)
    what the engine did with the job."""

    error: str  # as the line quotes it: "ValueError: bad address", capped, on one line
    exc_type: str | None = None
    exc_message: str = ""
    reason: str = ""  # why the worker could not run the job at all
    exc: BaseException | None = None
    traceback: str = ""
    ended: float | None = field(default_factory=time.monotonic)  # None: the job never ran
    outcome: str = "failed"  # the worker's count: "retrying", "failed" or "claim lost"
    next_action: str = "dead-lettered"
    next_text: str = "dead-lettered"
    retry_in_s: float | None = None
    level: int = logging.ERROR

    @classmethod
    def of_exception(cls, exc: BaseException) -> Failure:
        ended = time.monotonic()
        message = line_text(safe_str(exc))
        name = exception_name(exc)
        return cls(
            error=f"{name}: {message}" if message else name,
            exc_type=name,
            exc_message=message,
            exc=exc,
            traceback=format_traceback(exc),
            ended=ended,
        )

    @classmethod
    def of_error(cls, error: str) -> Failure:
        """``job.failed(error)``, called by the handler."""
        text = line_text(error)
        return cls(error=text, exc_message=text)

    @classmethod
    def not_run(cls, reason: str) -> Failure:
        """A job the worker cannot run (its payload, its name)."""
        text = line_text(reason)
        return cls(error=text, reason=text, ended=None)

    def decide(self, result: Outcome | None, *, claimed: ClaimedJob, retry_delay_ms: int = 0, why: str = "") -> None:
        """Take the engine's answer to the failure (``fail_outcome``);
        ``why``: the reason it is dead-lettered, when the worker says so."""
        if result is Outcome.RETRYING:
            self.outcome = self.next_action = "retrying"
            self.retry_in_s = retry_delay_ms / 1000
            self.next_text = f"retrying in {self.retry_in_s:.1f} s"
            self.level = logging.WARNING
        elif result is Outcome.FAILED:
            self.outcome, self.next_action = "failed", "dead-lettered"
            if why:
                self.next_text = f"dead-lettered ({why})"
            elif claimed.fields.get("delivery") == "at-most-once":
                self.next_text = "dead-lettered (at-most-once: never retried)"
            elif claimed.max_attempts and claimed.attempts >= claimed.max_attempts:
                self.next_text = "dead-lettered (no attempts left)"
            else:
                self.next_text = "dead-lettered"
            self.level = logging.ERROR
        else:
            self.outcome = self.next_action = "claim lost"
            self.next_text = "not recorded: the claim was lost (its lease ran out, or the job is gone)"
            self.level = logging.WARNING

    def log(self, claimed: ClaimedJob, queue: str, started: float) -> None:
        fields: dict[str, Any] = {"outcome": "failed", "next_action": self.next_action}
        if self.ended is None:
            happened = f"cannot run: {self.error}"
            fields["outcome"] = "not run"
        else:
            ms = (self.ended - started) * 1000
            happened = f"failed after running {ms:.1f} ms: {self.error}"
            fields["duration_ms"] = round(ms, 3)
        if self.retry_in_s is not None:
            fields["retry_in_s"] = self.retry_in_s
        if self.exc_type is not None:
            fields["exc_type"] = self.exc_type
        if self.exc_message:
            fields["exc_message"] = self.exc_message
        if self.reason:
            fields["reason"] = self.reason
        log_event(self.level, claimed, queue, happened, self.next_text, fields, exc=self.exc, traceback=self.traceback)


def log_cut_off(claimed: ClaimedJob, queue: str, reason: str, status: str) -> None:
    """A job whose run ended without its worker finishing it (the worker was
    lost, its lease ran out, it restarted), now ``status`` ("failed", "lost")."""
    if status == "lost":
        next_action, next_text = "lost", "lost (at-most-once)"
    elif claimed.max_attempts and claimed.attempts >= claimed.max_attempts:
        next_action, next_text = "dead-lettered", "dead-lettered (no attempts left)"
    else:
        next_action, next_text = "dead-lettered", "dead-lettered"
    text = line_text(reason)
    fields = {"outcome": "cut off", "next_action": next_action, "reason": text}
    log_event(logging.ERROR, claimed, queue, f"cut off: {text}", next_text, fields)
