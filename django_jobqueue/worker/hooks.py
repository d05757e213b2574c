"""HookRunner: user hooks the worker's own threads must not run themselves.

A hook (``on_max_attempts_exhausted`` of a job dead-lettered by the sweep)
is user code: it may send mail through a slow SMTP server or hang. The
threads that keep the worker alive (heartbeat, lease renewal, the sweep)
hand such calls to this runner's thread and go on at once. Calls run one at
a time, in order; one that raises is logged and the next runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger("django_jobqueue.worker")

# Calls waiting beyond this many are dropped (logged): a hook that hangs must
# not grow the worker's memory without bound.
MAX_WAITING = 10_000


class HookRunner:
    def __init__(self, name: str = "jobq-hooks") -> None:
        self._calls: queue.Queue[Callable[[], object] | None] = queue.Queue(MAX_WAITING)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the hooks thread, later; never waits."""
        try:
            self._calls.put_nowait(call)
        except queue.Full:
            logger.error("%d hook calls wait already: one dropped", MAX_WAITING)

    def stop(self, timeout: float) -> None:
        """Let the calls submitted so far run, for up to ``timeout`` seconds."""
        try:
            self._calls.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call()
            except BaseException:  # noqa: BLE001 - one hook (SystemExit in it too) must not stop the others
                try:
                    logger.exception("a hook raised")
                except Exception:  # noqa: BLE001, S110 - nor a logging filter that raises
                    pass
