"""Upkeep: a worker's heartbeat and sweeps, apart from running jobs.

The heartbeat (the worker's presence record, registered at startup) beats on
a thread that does nothing else; the maintenance thread sends completions
left waiting, sweeps the queues, takes lapsed workers' jobs back and sends the
runs' samples (sampling.py). Jobs a
sweep or a reclaim dead-letters because their last attempt died with their
worker get their hook called by ``ExhaustedByReclaim``, on the hooks thread:
no user code runs on the heartbeat or maintenance threads.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..connection import get_client
from ..engine.replies import ClaimedJob
from ..exceptions import UnknownJobError
from ..registry import get_definition
from . import joblog
from .job import Job
from .redis_health import CONNECTION_ERRORS

if TYPE_CHECKING:
    from ..conf import Settings
    from ..engine.queue import RedisJobQueue
    from .fetcher import Fetcher
    from .hooks import HookRunner
    from .presence import Presence
    from .redis_health import RedisHealth
    from .sampling import Sampler

logger = logging.getLogger("django_jobqueue.worker")


class ExhaustedByReclaim:
    """Writes the line of each job a sweep or the reclaim of a lost worker's
    jobs dead-lettered (its last attempt died with its worker, or it was
    at-most-once: lost), and calls its hook, since no runner will: on the
    hooks thread, which runs user code and may wait on Redis."""

    def __init__(self, hooks: HookRunner) -> None:
        self._hooks = hooks

    def submit(self, queue: RedisJobQueue, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._hooks.submit(functools.partial(self._call_hook, queue, job_id))

    def _call_hook(self, queue: RedisJobQueue, job_id: str) -> None:
        fields = queue.get_fields(job_id)
        if not fields:
            return
        claimed = ClaimedJob.from_fields(fields)
        status = fields.get("status")
        # Not when lost (at-most-once) or past max_deliveries: its attempts are not used up.
        if status == "failed" and claimed.max_attempts and claimed.attempts >= claimed.max_attempts:
            # The hook first: nothing the line's logging does (a filter that
            # raises) may keep it from being called.
            self._exhausted(queue, claimed, fields.get("name", ""))
        if status in ("failed", "lost"):
            # Its line, as a runner writes one for a failed job (read here, off the maintenance thread).
            joblog.log_cut_off(claimed, queue.queue_name, fields.get("last_error", ""), status)

    def _exhausted(self, queue: RedisJobQueue, claimed: ClaimedJob, name: str) -> None:
        try:
            definition = get_definition(name)
        except UnknownJobError:
            return
        if definition.on_max_attempts_exhausted is not None:
            try:
                definition.on_max_attempts_exhausted(Job(queue, claimed, definition))
            except Exception:  # noqa: BLE001
                logger.exception("job %s: on_max_attempts_exhausted raised", claimed.id)


class Upkeep:
    """The heartbeat loop and the maintenance loop (flushes and sweeps) of a worker."""

    def __init__(
        self,
        settings: Settings,
        queues: list[RedisJobQueue],
        worker_id: str,
        presence: Presence,
        fetcher: Fetcher,
        *,
        health: RedisHealth,
        sampler: Sampler,
        on_dead_lettered: Callable[[RedisJobQueue, list[str]], None],
        stopping: threading.Event,
        leaving: threading.Event,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.worker_id = worker_id
        self._presence = presence
        self._fetcher = fetcher  # sends completions left waiting; told of failed calls
        self._health = health
        self._sampler = sampler  # sends the runs' samples (no user code)
        self._on_dead_lettered = on_dead_lettered
        self._stopping = stopping  # set: the worker is shutting down (its record says "stopping")
        self._leaving = leaving  # set: about to remove the worker's record: no more beats
        self.last_sweep = 0.0

    def startup(self) -> None:
        if self.settings.durable:
            from ..engine.durability import persistence_problem

            problem = persistence_problem(get_client())
            if problem:
                logger.warning("DURABLE is on, but %s", problem)
        self._presence.register()

    def heartbeat_loop(self) -> None:
        """The heartbeat, on a thread that does nothing else: a slow sweep, a
        node that is down, or a user's hook must never let this worker's beat
        lapse (another worker would take it for lost and run its jobs again)."""
        while not self._leaving.is_set():
            try:
                self.heartbeat()
            except CONNECTION_ERRORS as exc:
                self._fetcher.redis_failed()
                self._health.note_down(exc)
            except Exception:  # noqa: BLE001 - the heartbeat must keep going
                logger.exception("heartbeat failed")
            self._leaving.wait(self.settings.heartbeat_seconds)

    def heartbeat(self) -> None:
        if self._presence.beat(stopping=self._stopping.is_set()):
            # Our beats stopped for a while (frozen, cut off): another worker
            # may have taken us for lost and handed back the jobs we claimed
            # ahead. Each is checked in Redis before a runner starts it.
            self._fetcher.redis_failed()

    def maintenance_loop(self) -> None:
        interval = min(self.settings.heartbeat_seconds, self.settings.sweep_interval_seconds)
        while not self._leaving.is_set():
            # Each step on its own: with a cluster, one queue's node may be down
            # while the others are up. (The heartbeat and lease renewals have
            # threads of their own.)
            down: Exception | None = None
            for step in (self._fetcher.flush_stale, self.sweep, self._sampler.flush_due):
                try:
                    step()
                except CONNECTION_ERRORS as exc:
                    down = down or exc
                except Exception:  # noqa: BLE001 - maintenance must keep going
                    logger.exception("maintenance failed")
            if down is None and self._health.down_since is not None:
                # No step may have reached Redis (each works only when due):
                # Redis is back when it answers, not when nothing failed.
                try:
                    get_client().ping()
                except CONNECTION_ERRORS as exc:
                    down = exc
            if down is None:
                self._health.up()
            else:
                self._fetcher.redis_failed()
                self._health.note_down(down)
            self._leaving.wait(interval)

    def sweep(self) -> None:
        now = time.monotonic()
        if now - self.last_sweep < self.settings.sweep_interval_seconds:
            return
        self.last_sweep = now
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
            self._on_dead_lettered(queue, result.dead_lettered)
            if result.reclaimed or result.dead_lettered or result.expired:
                logger.warning(
                    "sweep of %s: %d reclaimed, %d dead-lettered, %d expired",
                    queue.queue_name,
                    len(result.reclaimed),
                    len(result.dead_lettered),
                    len(result.expired),
                )
        if self._health.away_lately(2 * self.settings.worker_timeout_seconds):
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
