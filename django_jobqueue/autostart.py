"""RUN_ON_STARTUP: a worker inside the web process, for development.

Started on the first request a process serves (not in ``ready()``, so
``migrate``, ``shell`` and tests never start one), in daemon threads, for the
queues whose setting asks for it; stopped when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Any

from .conf import get_settings

if TYPE_CHECKING:
    from .worker.worker import Worker

logger = logging.getLogger("django_jobqueue.worker")
_lock = threading.Lock()
# Set once a worker was started in this process (cleared by stop()).
_started = threading.Event()
_worker: Worker | None = None


def on_request_started(**kwargs: Any) -> None:
    global _worker
    if _started.is_set():
        return
    try:
        queues = [q.name for q in get_settings().queues.values() if q.run_on_startup]
    except Exception:  # noqa: BLE001 - bad settings are reported by the system checks
        return
    if not queues:
        return  # checked again on the next request: settings may change (tests)
    with _lock:
        if _started.is_set():  # another request's thread started it meanwhile
            return
        _started.set()
        from .worker.worker import Worker

        worker = _worker = Worker(queues, worker_id=None)
        thread = threading.Thread(
            target=worker.run, kwargs={"install_signals": False}, name="jobq-in-process", daemon=True
        )
        thread.start()
        atexit.register(worker.stop)
        logger.warning("RUN_ON_STARTUP: in-process worker started for %s", ", ".join(queues))


def stop() -> None:
    """Stop the in-process worker, if one runs, and allow a new one to start."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
        _started.clear()
    if worker is not None:
        worker.stop()
        worker._stopped.wait(10)
