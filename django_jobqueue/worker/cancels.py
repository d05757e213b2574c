"""CancelListener: cancellations of the jobs this worker holds, heard as they are asked.

cancel.lua publishes the id of every claimed job whose cancellation is asked
on its queue's cancels channel. One thread per worker listens to the
channels of its queues (sharded pub/sub on a Redis Cluster) and, for a job
it holds: a job claimed ahead that no runner has taken yet is dropped and
ended ``cancelled`` without running; a running job's handler sees
``job.cancelled`` at once (without the nudge it sees it within a second of
asking: worker/job.py). Pub/sub drops the messages published while the
listener is not subscribed (a reconnection): so each time it subscribes it
looks up the requests of every job held here (one pipelined round trip) and
treats those found as heard. A message about a job not held (yet: it lands
between the claim script and the worker registering the job) is remembered
for HEARD_KEEP_S and applied when the job is registered. A running job's
handler also finds the request by its own look-ups. No user code runs here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..engine import cluster
from ..engine.replies import _s
from .redis_health import CONNECTION_ERRORS

if TYPE_CHECKING:
    from ..engine.queue import RedisJobQueue
    from ..engine.replies import ClaimedJob
    from .fetcher import Fetcher
    from .running import RunningJobs

logger = logging.getLogger("django_jobqueue.worker")

# How long one wait for a message lasts: how soon the thread sees the worker stop.
POLL_S = 0.5
# The pause before subscribing again after a connection error.
RETRY_S = 1.0
# How long a request heard for a job not held here is remembered (a claim's
# reply on its way: milliseconds), and how many such ids at most (the requests
# for other workers' jobs are heard too).
HEARD_KEEP_S = 60.0
HEARD_MAX = 10_000


class CancelListener:
    """Listens to the queues' cancels channels; tells the jobs held here."""

    def __init__(
        self,
        queues: Sequence[RedisJobQueue],
        running: RunningJobs,
        fetcher: Fetcher,
        stopped: threading.Event,
        on_dropped: Callable[[RedisJobQueue, ClaimedJob], object],
    ) -> None:
        self._queues = list(queues)
        self._running = running
        self._fetcher = fetcher
        self._stopped = stopped  # set: the worker is gone
        self._on_dropped = on_dropped  # a claimed-ahead job dropped here: the worker ends it
        self.subscribed = threading.Event()  # set once listening (tests wait for it)
        # Ids heard while not held here, oldest first: id -> when heard (monotonic).
        self._unheld: OrderedDict[str, float] = OrderedDict()
        # Held by heard() as it finds a job not held, and by claimed() as it
        # registers jobs: a request heard between the two is never missed.
        self._lock = threading.Lock()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.loop, name="jobq-cancels", daemon=True)
        t.start()
        return t

    def loop(self) -> None:
        by_client: dict[int, tuple[Any, list[str]]] = {}
        for q in self._queues:
            by_client.setdefault(id(q.client), (q.client, []))[1].append(q.keys.cancels)
        # One client in practice (the shared one); each has its own connection.
        client, channels = next(iter(by_client.values()))
        others = [c for c, _ in by_client.values() if c is not client]
        if others:
            logger.warning("cancellation nudges are heard on the first queue's Redis only")
        while not self._stopped.is_set():
            pubsub = None
            try:
                pubsub = cluster.pubsub(client)
                pubsub.subscribe(*channels)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=POLL_S)
                    if message is None:
                        continue
                    kind = _s(message.get("type", ""))
                    if kind in ("subscribe", "ssubscribe"):
                        # (Re)subscribed: what was published meanwhile is lost.
                        self.recheck()
                        self.subscribed.set()
                    elif kind in ("message", "smessage"):
                        self.heard(_s(message["data"]))
            except CONNECTION_ERRORS as exc:
                logger.debug("cancellation listener: %s", exc)  # the maintenance loop reports outages
                self._stopped.wait(RETRY_S)
            except Exception:  # noqa: BLE001 - the listener must keep going
                logger.exception("cancellation listener failed")
                self._stopped.wait(RETRY_S)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception as exc:  # noqa: BLE001
                        logger.debug("closing the cancellation listener's connection failed: %s", exc)

    def claimed(self, queue: RedisJobQueue, jobs: list[ClaimedJob]) -> None:
        """Register jobs just claimed (the fetcher's callback); those whose
        cancellation was heard before they were registered are marked."""
        with self._lock:
            self._running.track(queue, jobs)
            if not self._unheld:
                return
            self._expire_unheld(time.monotonic())
            asked = [c.id for c in jobs if self._unheld.pop(c.id, None) is not None]
        for job_id in asked:
            self.heard(job_id)  # not in the fetcher's ready jobs yet: the runner that takes it drops it

    def recheck(self) -> None:
        """Look up the requests of every job held here (HEXISTS each, one
        pipelined round trip per Redis client) and treat those found as heard."""
        held = self._running.snapshot()
        by_client: dict[int, tuple[Any, list[str]]] = {}
        for running in held:
            client, ids = by_client.setdefault(id(running.queue.client), (running.queue.client, []))
            ids.append(running.claimed.id)
        asked: list[str] = []
        for client, ids in by_client.values():
            keys = {r.claimed.id: r.queue.keys.job(r.claimed.id) for r in held if r.queue.client is client}
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hexists(keys[job_id], "cancel_requested_ms")
            # An error reply (a job key of the wrong type) reads as not asked.
            found = pipe.execute(raise_on_error=False)
            asked += [job_id for job_id, yes in zip(ids, found, strict=True) if yes is True or yes == 1]
        for job_id in asked:
            self.heard(job_id)

    def _expire_unheld(self, now: float) -> None:
        while self._unheld:
            oldest, at = next(iter(self._unheld.items()))
            if now - at < HEARD_KEEP_S and len(self._unheld) <= HEARD_MAX:
                return
            del self._unheld[oldest]

    def heard(self, job_id: str) -> None:
        """A job's cancellation was asked: tell it, if this worker holds it
        (else remember it a while: its claim may not be registered yet)."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                now = time.monotonic()
                self._unheld[job_id] = now
                self._unheld.move_to_end(job_id)
                self._expire_unheld(now)
                return
        running.cancel_requested = True
        job = running.job
        if job is not None:
            job.cancel_heard()
        if self._fetcher.discard(running.claimed):
            # Claimed ahead, not taken by a runner: it never starts.
            self._on_dropped(running.queue, running.claimed)
