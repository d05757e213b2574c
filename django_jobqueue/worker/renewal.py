"""LeaseRenewal: the leases of a worker's running jobs, renewed in time.

One thread per queue runs ``loop``: with a cluster, a call to a node that is
down may wait seconds (a cluster client retries before it gives up), and that
must never hold up the renewal of jobs whose nodes are fine (their leases
would run out and they would run twice), nor the heartbeat. No user code runs
here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .redis_health import CONNECTION_ERRORS

if TYPE_CHECKING:
    from ..engine.queue import RedisJobQueue
    from .fetcher import Fetcher
    from .running import RunningJobs

logger = logging.getLogger("django_jobqueue.worker")

# How often the renewal thread looks whether a third of the shortest lease has passed.
RENEW_CHECK_S = 0.1


class LeaseRenewal:
    """Renews the leases of the running jobs, a third of the way through each lease."""

    def __init__(self, running: RunningJobs, fetcher: Fetcher, stopped: threading.Event) -> None:
        self._running = running
        self._fetcher = fetcher  # told of failed calls; holds the jobs claimed ahead
        self._stopped = stopped  # set: the worker is gone, nothing of it runs any more

    def loop(self, queue: RedisJobQueue, period_s: float) -> None:
        """Renew ``queue``'s leases every ``period_s`` until the worker has stopped."""
        last = 0.0
        while not self._stopped.is_set():
            if time.monotonic() - last >= period_s:
                last = time.monotonic()
                try:
                    self.renew(queue)
                except CONNECTION_ERRORS as exc:
                    self._fetcher.redis_failed()
                    logger.debug("lease renewal: %s", exc)  # the maintenance loop reports outages
                except Exception:  # noqa: BLE001 - renewal must keep going
                    logger.exception("lease renewal failed")
            self._stopped.wait(RENEW_CHECK_S)

    def renew(self, queue: RedisJobQueue) -> None:
        """Extend the lease of every running job of ``queue`` (a third of the
        way through it), so a slow job is never taken for a dead one: one
        pipeline for all of them."""
        running = self._running.of_queue(queue)
        if not running:
            return
        leases = queue.touch_many([r.claimed for r in running])
        for r, lease in zip(running, leases, strict=True):
            if isinstance(lease, CONNECTION_ERRORS):
                raise lease
            if isinstance(lease, Exception):
                logger.error("job %s: renewing its lease failed: %s", r.claimed.id, lease)
                continue
            if lease is not None or r.finished:
                # A job whose handler has returned: its completion, sent or on
                # its way, says whether the claim was still ours.
                continue
            if not self._running.is_current(r):
                continue  # it finished here meanwhile: nothing was lost
            if self._fetcher.discard(r.claimed):
                # Claimed ahead, not yet taken by a runner: it must not run here.
                self._running.forget(r.claimed.id)
                logger.warning("job %s: claim lost before it started (not run here)", r.claimed.id)
                continue
            logger.warning("job %s: lease lost (reclaimed or finished elsewhere)", r.claimed.id)
