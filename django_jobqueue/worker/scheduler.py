"""The scheduler a worker runs: periodic jobs enqueued on their ticks.

Every worker runs one (``jobq_worker --no-scheduler`` opts out); there is no
leader to elect or lose. Once a second it sends one pipeline (one round trip,
whatever the number of schedules): the steps (tick.lua) of the schedules it
expects to be due by now, then the read of those due (schedules_due.lua).
tick.lua enqueues each tick once however many schedulers try, so an
expectation that is out of date costs nothing but a refused step, whose reply
says where the schedule's next tick is now (engine/schedules.py). What the
read finds due that was not expected is stepped at the next pass. It runs on
a thread of its own, and runs no user code: a schedule's payload is fixed JSON.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from ..engine import scripts
from ..engine.queue import RedisJobQueue
from ..engine.schedules import Call, Schedule, ScheduleStore, plan

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
        # queue -> schedule -> the tick (ms) it is expected to be at: learnt
        # from the reads of due schedules and from the replies of the steps.
        self._expected: dict[str, dict[str, int]] = {name: {} for name in queues}
        # Owed runs (overlap "queue") the last read found ready, to release.
        self._owed: dict[str, set[str]] = {name: set() for name in queues}
        # The server's clock minus ours (ms), from the last read.
        self._offset_ms: float | None = None

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
        """One pass, one round trip: the steps of the schedules expected due by
        now, then the read of the due ones (for the next pass); the ids of the
        runs enqueued."""
        active = [name for name, defined in self.schedules.items() if defined]
        if not active:
            return []
        steps: list[Step] = []
        if self._offset_ms is not None:
            now_ms = int(time.time() * 1000 + self._offset_ms)
            for queue_name in active:
                store, defined = self.stores[queue_name], self.schedules[queue_name]
                for name, due_ms in list(self._expected[queue_name].items()):
                    if due_ms <= now_ms and name in defined:
                        call = store.tick_call(defined[name], due_ms, now_ms)
                        following = plan(defined[name], due_ms, now_ms).next_ms
                        steps.append(Step(queue_name, name, call, following))
                for name in self._owed[queue_name] & set(defined):
                    steps.append(
                        Step(queue_name, name, store.release_owed_call(defined[name], now_ms), releases_owed=True)
                    )
                self._owed[queue_name].clear()
        reads = [self.stores[name].due_call() for name in active]
        client = self.stores[active[0]].queue.client
        sent_at = time.time() * 1000
        # Each step is its own atomic call: one refused (an error reply) never
        # discards the others; it is expected again at the next pass.
        replies = scripts.run_pipeline(client, [step.call for step in steps] + reads, raise_on_error=False)
        enqueued = self._stepped(steps, replies[: len(steps)])
        stepped = {(step.queue, step.name) for step in steps}
        for queue_name, reply in zip(active, replies[len(steps) :], strict=True):
            if isinstance(reply, Exception):
                raise reply
            now_ms, due, owed = ScheduleStore.parse_due(reply)
            self._offset_ms = now_ms - (sent_at + time.time() * 1000) / 2
            defined, expected = self.schedules[queue_name], self._expected[queue_name]
            for name, due_ms in due:
                if name not in defined:
                    continue  # defined by a newer deployment's workers: theirs to run
                if (queue_name, name) in stepped:
                    # The read may have run before this pass's step (a step sent
                    # again after NOSCRIPT runs last): a tick only moves forward.
                    expected[name] = max(expected.get(name, due_ms), due_ms)
                else:
                    expected[name] = due_ms
            self._owed[queue_name] = set(owed) & set(defined)
        return enqueued

    def _stepped(self, steps: list[Step], replies: list[Any]) -> list[str]:
        enqueued: list[str] = []
        for step, reply in zip(steps, replies, strict=True):
            expected = self._expected[step.queue]
            if isinstance(reply, Exception):
                logger.error("schedule %s: its step failed (tried again next pass): %s", step.name, reply)
                continue
            ids = ScheduleStore.parse_tick(reply)
            if step.releases_owed:
                pass
            elif ids is None:  # another scheduler took this step: the reply says where the tick is now
                moved = ScheduleStore.moved_to(reply)
                if moved is None:
                    expected.pop(step.name, None)
                else:
                    expected[step.name] = moved
            elif step.following is None:
                expected.pop(step.name, None)  # the schedule has ended
            else:
                expected[step.name] = step.following
            if ids:
                logger.info("schedule %s: enqueued %s", step.name, ", ".join(ids))
                enqueued += ids
        return enqueued


@dataclass(frozen=True)
class Step:
    """One schedule's step in a pass: a tick (and the tick after it), or an owed run."""

    queue: str
    name: str
    call: Call
    following: int | None = None
    releases_owed: bool = False
