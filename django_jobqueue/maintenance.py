"""WorkerMaintenance: the worker's upkeep, apart from running jobs.

The maintenance thread's loop and each of its steps: renewing the leases of
running jobs, the heartbeat (the worker's presence record, registered at
startup), the sweep of the queues (and taking lapsed workers' jobs back), and
the bookkeeping of Redis going down and coming back, which the runner threads
and the shutdown share. None of this claims or runs a job, so it lives apart
from worker.py's claim -> run -> finish path, as a mixin Worker inherits:
callers still see one class.

This module must not import worker.py at run time (worker.py imports it): it
works on the attributes Worker.__init__ sets, declared below for type checkers.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import get_client
from .context import Job
from .exceptions import UnknownJobError
from .jobtypes import ClaimedJob
from .registry import get_definition

if TYPE_CHECKING:
    from .conf import QueueSettings, Settings
    from .fetcher import Fetcher
    from .hooks import HookRunner
    from .presence import Presence
    from .queue import RedisJobQueue
    from .worker import Running

logger = logging.getLogger("django_jobqueue.worker")

T = TypeVar("T")

# How often the renewal thread looks whether a third of the shortest lease has passed.
RENEW_CHECK_S = 0.1

# The longest pause between tries while Redis is unavailable.
REDIS_RETRY_MAX_S = 1.0

# Redis cannot serve us now: wait (logging), retry. A read-only replica may be
# promoted by a failover, a full Redis (noeviction) may be emptied.
CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
)


class WorkerMaintenance:
    """Leases, heartbeat, sweeps and Redis outages of a Worker (a mixin: use Worker)."""

    # Set by Worker.__init__.
    settings: Settings
    queues: list[RedisJobQueue]
    queue_settings: list[QueueSettings]
    worker_id: str
    _stopping: threading.Event
    _stopped: threading.Event
    _leaving: threading.Event
    _running: dict[str, Running]
    _lock: threading.Lock
    _signals: int
    _hooks: HookRunner
    _last_sweep: float
    _redis_down_since: float | None
    _redis_back_at: float
    _presence: Presence
    _fetcher: Fetcher

    # ------------------------------------------------------------ maintenance

    def _renewal_loop(self, queue: RedisJobQueue) -> None:
        """Lease renewal of one queue's running jobs, on a thread of its own:
        with a cluster, a call to a node that is down may wait seconds (a
        cluster client retries before it gives up), and that must never hold
        up the renewal of jobs whose nodes are fine (their leases would run
        out and they would run twice), nor the heartbeat."""
        period = self._queue_settings_of(queue).visibility_ms / 3000
        last = 0.0
        while not self._stopped.is_set():
            if time.monotonic() - last >= period:
                last = time.monotonic()
                try:
                    self._renew_leases(queue)
                except CONNECTION_ERRORS as exc:
                    self._fetcher.redis_failed()
                    logger.debug("lease renewal: %s", exc)  # the maintenance loop reports outages
                except Exception:  # noqa: BLE001 - renewal must keep going
                    logger.exception("lease renewal failed")
            self._stopped.wait(RENEW_CHECK_S)

    def _heartbeat_loop(self) -> None:
        """The heartbeat, on a thread that does nothing else: a slow sweep, a
        node that is down, or a user's hook must never let this worker's beat
        lapse (another worker would take it for lost and run its jobs again)."""
        while not self._leaving.is_set():
            try:
                self._heartbeat()
            except CONNECTION_ERRORS as exc:
                self._fetcher.redis_failed()
                self._note_redis_down(exc)
            except Exception:  # noqa: BLE001 - the heartbeat must keep going
                logger.exception("heartbeat failed")
            self._leaving.wait(self.settings.heartbeat_seconds)

    def _maintenance_loop(self) -> None:
        interval = min(self.settings.heartbeat_seconds, self.settings.sweep_interval_seconds)
        while not self._leaving.is_set():
            # Each step on its own: with a cluster, one queue's node may be down
            # while the others are up. (The heartbeat and lease renewals have
            # threads of their own.)
            down: Exception | None = None
            for step in (self._fetcher.flush_stale, self._sweep):
                try:
                    step()
                except CONNECTION_ERRORS as exc:
                    down = down or exc
                except Exception:  # noqa: BLE001 - maintenance must keep going
                    logger.exception("maintenance failed")
            if down is None:
                self._redis_up()
            else:
                self._fetcher.redis_failed()
                self._note_redis_down(down)
            self._leaving.wait(interval)

    def _note_redis_down(self, exc: Exception) -> None:
        if self._redis_down_since is None:
            # Logged once; no backoff here: renewals must keep their pace.
            self._redis_down_since = time.monotonic()
            logger.error("Redis unavailable: %s; retrying", exc)

    def _queue_settings_of(self, queue: RedisJobQueue) -> QueueSettings:
        return self.queue_settings[self.queues.index(queue)]

    def _job_list(self) -> str:
        with self._lock:
            jobs = [[r.queue.queue_name, r.claimed.id, r.claimed.claim_token] for r in self._running.values()]
        return json.dumps(jobs)

    def _heartbeat(self) -> None:
        if self._presence.beat(stopping=self._stopping.is_set()):
            # Our beats stopped for a while (frozen, cut off): another worker
            # may have taken us for lost and handed back the jobs we claimed
            # ahead. Each is checked in Redis before a runner starts it.
            self._fetcher.redis_failed()

    def _startup(self) -> None:
        if self.settings.durable:
            from .durability import persistence_problem

            problem = persistence_problem(get_client())
            if problem:
                logger.warning("DURABLE is on, but %s", problem)
        self._presence.register()

    def _renew_leases(self, queue: RedisJobQueue) -> None:
        """Extend the lease of every running job of ``queue`` (a third of the
        way through it), so a slow job is never taken for a dead one: one
        pipeline for all of them."""
        with self._lock:
            running = [r for r in self._running.values() if r.queue is queue]
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
            with self._lock:
                if self._running.get(r.claimed.id) is not r:
                    continue  # it finished here meanwhile: nothing was lost
            if self._fetcher.discard(r.claimed):
                # Claimed ahead, not yet taken by a runner: it must not run here.
                with self._lock:
                    self._running.pop(r.claimed.id, None)
                logger.warning("job %s: claim lost before it started (not run here)", r.claimed.id)
                continue
            logger.warning("job %s: lease lost (reclaimed or finished elsewhere)", r.claimed.id)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.settings.sweep_interval_seconds:
            return
        self._last_sweep = now
        client = get_client()
        lock_ms = int(self.settings.sweep_interval_seconds * 3000)
        for queue in self.queues:
            try:
                # Any worker may sweep; the lock only spares Redis the duplicate work.
                if not client.set(queue.keys.sweep_lock, self.worker_id, nx=True, px=lock_ms):
                    continue
                result = queue.sweep()
            except CONNECTION_ERRORS as exc:
                logger.debug("sweep of %s skipped: %s", queue.queue_name, exc)
                continue
            self._exhausted_later(queue, result.dead_lettered)
            if result.reclaimed or result.dead_lettered or result.expired:
                logger.warning(
                    "sweep of %s: %d reclaimed, %d dead-lettered, %d expired",
                    queue.queue_name,
                    len(result.reclaimed),
                    len(result.dead_lettered),
                    len(result.expired),
                )
        if (
            self._redis_down_since is not None
            or time.monotonic() - self._redis_back_at < 2 * self.settings.worker_timeout_seconds
        ):
            # In an outage, or just back from one (a failover, a restart): the
            # other workers' beats look old too, through no fault of theirs
            # (and may wait out a backoff). Give them time to beat again before
            # taking any for lost; leases still bring back the jobs of a dead
            # one. (In an outage as this worker sees it: with a cluster, the
            # node of the workers' registry may answer again before this
            # worker has called Redis back, and a sweep of a queue on a
            # healthy node would take every other worker for lost.)
            return
        self._presence.reclaim_lapsed()

    def _exhausted_later(self, queue: RedisJobQueue, job_ids: list[str]) -> None:
        """Jobs dead-lettered because their last attempt died with its worker
        (by a sweep, or by the reclaim of a lost worker's jobs): their hooks
        are user code, run by the hooks thread, never here."""
        for job_id in job_ids:
            self._hooks.submit(functools.partial(self._exhausted_by_reclaim, queue, job_id))

    def _exhausted_by_reclaim(self, queue: RedisJobQueue, job_id: str) -> None:
        """A job whose last attempt died with its worker: call its hook here,
        since no runner will."""
        fields = queue.get_fields(job_id)
        if not fields:
            return
        try:
            definition = get_definition(fields.get("name", ""))
        except UnknownJobError:
            return
        claimed = ClaimedJob.from_fields(fields)
        if fields.get("status") != "failed" or not claimed.max_attempts or claimed.attempts < claimed.max_attempts:
            return  # lost (at-most-once), or past max_deliveries: its attempts are not used up
        if definition.on_max_attempts_exhausted is not None:
            try:
                definition.on_max_attempts_exhausted(Job(queue, claimed, definition))
            except Exception:  # noqa: BLE001
                logger.exception("job %s: on_max_attempts_exhausted raised", job_id)

    # ------------------------------------------------------------ redis down

    def _with_redis(self, fn: Callable[[], T], what: str, attempts: int | None = None) -> T | None:
        """Call ``fn`` until Redis answers, with backoff: its result, or None
        when ``attempts`` ran out (or the worker stops while Redis is away)."""
        delay, tried = 0.2, 0
        while True:
            try:
                return fn()
            except CONNECTION_ERRORS as exc:
                tried += 1
                if attempts is not None and tried >= attempts:
                    logger.error("%s failed, giving up: %s", what, exc)
                    return None
                logger.warning("%s: Redis unavailable (%s); retrying in %.1f s", what, exc, delay)
                if self._stopping.wait(delay) and attempts is None and self._signals:
                    return None
                delay = min(delay * 2, REDIS_RETRY_MAX_S)

    def _redis_down(self, exc: Exception) -> None:
        self._fetcher.redis_failed()
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
            logger.error("Redis unavailable: %s; retrying", exc)
        waited = now - self._redis_down_since
        # Short pauses (a failed connect is cheap): a runner resumes within
        # about REDIS_RETRY_MAX_S of Redis answering again.
        self._stopping.wait(min(REDIS_RETRY_MAX_S, 0.1 * (2 ** min(6, int(waited)))))

    def _redis_up(self) -> None:
        if self._redis_down_since is not None:
            logger.warning("Redis is back after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
            self._redis_back_at = time.monotonic()
