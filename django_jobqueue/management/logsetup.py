"""Logging for the long-running commands (jobq_worker, jobq_events)."""

from __future__ import annotations

import logging
import threading
import time
from typing import IO, Any

from django.core.management.base import OutputWrapper

from django_jobqueue.logformat import JSONFormatter
from django_jobqueue.terminal import safe_text
from django_jobqueue.worker.joblog import JobLine

# The choices of the commands' --log-format: lines for people, or JSON (logformat.py).
LOG_FORMATS = ("text", "json")


def unwrapped(out: OutputWrapper) -> IO[str]:
    """The stream under a command's ``self.stdout`` or ``self.stderr``: log
    lines go there as they are, without the wrapper's line ending and style."""
    # django-stubs leaves OutputWrapper._out undeclared (its __getattr__ types it as a callable).
    return out._out  # type: ignore[return-value]


class BatchHandler(logging.Handler):
    """Writes log lines in batches: one write (one system call) per batch.

    A worker logs a line per job; written one by one, that is a system call
    per job, which costs more than a short job. Records at ``flush_level`` and
    above go out at once (with everything before them), the rest when
    :meth:`flush` is called (by the flusher thread, every half second) or when
    ``capacity`` lines are waiting.
    """

    def __init__(self, stream: IO[str], *, capacity: int = 500, flush_level: int = logging.WARNING) -> None:
        super().__init__()
        self.stream = stream
        self.capacity = capacity
        self.flush_level = flush_level
        self._records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted at flush time, off the runner threads' path. A record's
        # arguments are the worker's own immutable values, so nothing changes
        # meanwhile; the time shown is the record's own.
        with self.lock:  # type: ignore[union-attr]  # set by Handler.__init__
            self._records.append(record)
            full = len(self._records) >= self.capacity
        if full or record.levelno >= self.flush_level:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            records, self._records = self._records, []
            if not records:
                return
            lines = []
            for record in records:
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:  # noqa: BLE001 - as logging.Handler does: report, never raise
                    self.handleError(record)
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing to do
                pass


# Starts each line of a traceback under a log line: a newline in an exception's
# message (or note) then cannot start a line that looks like a log line.
BLOCK_PREFIX = "    | "


def _block(text: str) -> str:
    return "\n".join(BLOCK_PREFIX + line for line in safe_text(text, multiline=True).split("\n"))


class _Formatter(logging.Formatter):
    """The default format, with the date and time text made once a second.

    Log lines quote stored text (job names and ids, worker ids, error text):
    control characters in it are escaped (terminal.py), and a message stays
    on one line; a traceback keeps its newlines, each of its lines indented
    (BLOCK_PREFIX)."""

    _second = -1
    _text = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.__class__ is not JobLine:
            return self._format_any(record)
        # A finished job's line, one a job: its message, without the fields
        # that JobLine.getMessage makes for other formatters (this one shows
        # none), and it has no traceback.
        record.message = logging.LogRecord.getMessage(record)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        return self.formatMessage(record)

    def _format_any(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the traceback and the stack indented.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            # Kept on the record, as logging does, for the other handlers; unindented.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + _block(record.exc_text)
        if record.stack_info:
            text += "\n" + _block(self.formatStack(record.stack_info))
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text, self._second = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)), second
        return f"{self._text},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return safe_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return safe_text(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return safe_text(super().formatStack(stack_info), multiline=True)


class _Flusher(threading.Thread):
    """Flushes a batching log handler twice a second."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__(name="jobq-log-flush", daemon=True)
        self.handler = handler
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.handler.flush()

    def stop(self) -> None:
        self._stop_event.set()
        self.handler.flush()


def add_log_format_argument(parser: Any) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: a line for people (default); json: one JSON object a line, for log shippers "
        "(ignored when the project's LOGGING gives the django_jobqueue logger a handler)",
    )


def setup(verbosity: int, stream: IO[str], *, buffered: bool = False, log_format: str = "text") -> _Flusher | None:
    """Send the ``django_jobqueue`` loggers to ``stream`` at the level
    ``--verbosity`` asks for (0: warnings and errors; 2: debug, which adds the
    traceback of each failed attempt), unless the project's LOGGING already
    gave them a handler.

    ``buffered``: write lines in batches (BatchHandler); warnings go out at
    once, the rest within half a second. ``log_format``: "text" or "json"
    (logformat.JSONFormatter). Returns the flusher to stop at exit.
    """
    level = logging.WARNING if verbosity == 0 else logging.DEBUG if verbosity >= 2 else logging.INFO
    log = logging.getLogger("django_jobqueue")
    log.setLevel(level)
    if log.handlers:
        return None
    handler: logging.Handler = BatchHandler(stream) if buffered else logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(message)s"))
    flusher = None
    if buffered:
        flusher = _Flusher(handler)
        flusher.start()
    log.addHandler(handler)
    log.propagate = False
    return flusher
