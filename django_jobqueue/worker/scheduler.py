"""The scheduler a worker runs: periodic jobs enqueued on their ticks.

Every worker runs one (``jobq_worker --no-scheduler`` opts out); there is no
leader to elect or lose. Once a second it reads the due schedules of every
queue in one pipeline (one round trip, whatever the number of schedules) and
takes each due one's step with tick.lua, which enqueues each tick once
however many schedulers try (engine/schedules.py). It runs on a thread of
its own, and runs no user code: a schedule's payload is fixed JSON.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from ..engine import scripts
from ..engine.queue import RedisJobQueue
from ..engine.schedules import Call, Schedule, ScheduleStore

logger = logging.getLogger("django_jobqueue.worker")

# Seconds between two reads of the due schedules.
POLL_S = 1.0


class Scheduler:
    """Runs the schedules of some queues: ``schedules`` by queue name, each
    queue's engine in ``queues``."""

    def __init__(
        self,
        queues: Mapping[str, RedisJobQueue],
        schedules: Mapping[str, Sequence[Schedule]],
        stopping: threading.Event,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self.stores = {name: ScheduleStore(queues[name]) for name in queues}
        self.schedules = {name: {s.name: s for s in schedules.get(name, ())} for name in queues}
        self._stopping = stopping
        self.poll_s = poll_s
        self._thread: threading.Thread | None = None

    def sync(self) -> None:
        """Write every schedule's definition to Redis (a new or changed one
        starts from its first tick after now, by the server's clock); forget
        the ones of these queues no longer defined (their past runs stay)."""
        for name, store in self.stores.items():
            store.sync(self.schedules[name].values(), store.server_now_ms())

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name="jobq-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def _loop(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                self.run_once()
            except RedisError as exc:
                logger.warning("scheduler: Redis error, trying again in %.0f s: %s", self.poll_s, exc)
            except Exception:
                logger.exception("scheduler: unexpected error; trying again in %.0f s", self.poll_s)

    def run_once(self) -> list[str]:
        """Read the due schedules (one round trip for every queue) and take
        their steps (one more, when any is due); the ids of the runs enqueued."""
        active = [name for name, defined in self.schedules.items() if defined]
        if not active:
            return []
        client = self.stores[active[0]].queue.client
        replies = scripts.run_pipeline(client, [self.stores[name].due_call() for name in active])
        calls: list[tuple[str, Call]] = []
        for queue_name, reply in zip(active, replies, strict=True):
            store, defined = self.stores[queue_name], self.schedules[queue_name]
            now_ms, due, owed = ScheduleStore.parse_due(reply)
            for name, due_ms in due:
                if name in defined:  # else defined by a newer deployment's workers: theirs to run
                    calls.append((name, store.tick_call(defined[name], due_ms, now_ms)))
            for name in owed:
                if name in defined:
                    calls.append((name, store.release_owed_call(defined[name], now_ms)))
        if not calls:
            return []
        # Each step is its own atomic call: one refused (an error reply) never
        # discards the others, and is tried again at the next pass.
        results = scripts.run_pipeline(client, [call for _name, call in calls], raise_on_error=False)
        enqueued: list[str] = []
        for (name, _call), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                logger.error("schedule %s: its step failed (tried again next pass): %s", name, result)
                continue
            ids = ScheduleStore.parse_tick(result) or []
            if ids:
                logger.info("schedule %s: enqueued %s", name, ", ".join(ids))
            enqueued += ids
        return enqueued
