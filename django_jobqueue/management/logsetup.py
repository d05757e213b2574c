"""Logging for the long-running commands (jobq_worker, jobq_events)."""

from __future__ import annotations

import logging
import threading
from logging.handlers import MemoryHandler
from typing import IO


class _Flusher(threading.Thread):
    """Flushes a buffered log handler twice a second."""

    def __init__(self, handler: MemoryHandler) -> None:
        super().__init__(name="jobq-log-flush", daemon=True)
        self.handler = handler
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.handler.flush()

    def stop(self) -> None:
        self._stop_event.set()
        self.handler.flush()


def setup(verbosity: int, stream: IO[str], *, buffered: bool = False) -> _Flusher | None:
    """Send the ``django_jobqueue`` loggers to ``stream`` at the level
    ``--verbosity`` asks for (0: warnings and errors), unless the project's
    LOGGING already gave them a handler.

    ``buffered``: write lines in batches (a worker logs a line per job, and a
    write per line costs a system call per job); warnings go out at once, the
    rest within half a second. Returns the flusher to stop at exit.
    """
    level = logging.WARNING if verbosity == 0 else logging.DEBUG if verbosity >= 2 else logging.INFO
    log = logging.getLogger("django_jobqueue")
    log.setLevel(level)
    if log.handlers:
        return None
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    flusher = None
    if buffered:
        handler = MemoryHandler(capacity=500, flushLevel=logging.WARNING, target=handler)
        flusher = _Flusher(handler)
        flusher.start()
    log.addHandler(handler)
    log.propagate = False
    return flusher
