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
from ..engine.schedules import Call, Plan, Refused, Schedule, ScheduleStore, plan

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
        # Per queue (its node's clock, in a cluster), the server's clock at the
        # last read and our monotonic clock then: "now" is reckoned from them,
        # so a jump of this machine's wall clock changes nothing (and tick.lua
        # refuses a plan ahead of the server's).
        self._server_at: dict[str, tuple[int, float]] = {}
        # Schedules whose step was refused for another definition in Redis,
        # to write again, and when each was last written (at most once a
        # minute: two releases running side by side take turns, the last to
        # write winning; docs/schedules.md).
        self._resync: set[tuple[str, str]] = set()
        self._rewritten_at: dict[tuple[str, str], float] = {}

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

    def _now_ms(self, queue_name: str) -> int | None:
        if queue_name not in self._server_at:
            return None
        server_ms, at = self._server_at[queue_name]
        return int(server_ms + (time.monotonic() - at) * 1000)

    def run_once(self) -> list[str]:
        """One pass, one round trip: the owed runs the last read found ready,
        the steps of the schedules expected due by now, then the read of the
        due ones (for the next pass); the ids of the runs enqueued."""
        active = [name for name, defined in self.schedules.items() if defined]
        if not active:
            return []
        self._resync_refused()
        steps: list[Step] = []
        for queue_name in active:
            now_ms = self._now_ms(queue_name)
            if now_ms is not None:
                steps += self._steps(queue_name, now_ms)
        reads = [self.stores[name].due_call() for name in active]
        client = self.stores[active[0]].queue.client
        sent_at = time.monotonic()
        # Each step is its own atomic call: one refused (an error reply) never
        # discards the others; it is expected again at the next pass.
        replies = scripts.run_pipeline(client, [step.call for step in steps] + reads, raise_on_error=False)
        received_at = time.monotonic()
        enqueued = self._stepped(steps, replies[: len(steps)])
        stepped = {(step.queue, step.name) for step in steps}
        for queue_name, reply in zip(active, replies[len(steps) :], strict=True):
            if isinstance(reply, Exception):
                logger.warning("scheduler: reading the due schedules of %s failed: %s", queue_name, reply)
                continue
            server_ms, due, owed = ScheduleStore.parse_due(reply)
            self._server_at[queue_name] = (server_ms, (sent_at + received_at) / 2)
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
            self._owed[queue_name] = {name for name in owed if name in defined}
        return enqueued

    def _steps(self, queue_name: str, now_ms: int) -> list[Step]:
        store, defined = self.stores[queue_name], self.schedules[queue_name]
        # Owed runs first: a tick stepped after them sees their run unfinished.
        steps = [
            Step(queue_name, name, store.release_owed_call(defined[name], now_ms), releases_owed=True)
            for name in sorted(self._owed[queue_name])
            if name in defined
        ]
        self._owed[queue_name].clear()
        for name, due_ms in list(self._expected[queue_name].items()):
            if due_ms <= now_ms and name in defined:
                step = plan(defined[name], due_ms, now_ms)
                steps.append(Step(queue_name, name, store.tick_call(defined[name], due_ms, now_ms, step), step))
        return steps

    def _stepped(self, steps: list[Step], replies: list[Any]) -> list[str]:
        enqueued: list[str] = []
        for step, reply in zip(steps, replies, strict=True):
            expected = self._expected[step.queue]
            if isinstance(reply, Exception):
                logger.error("schedule %s: its step failed (tried again next pass): %s", step.name, reply)
                continue
            refused = Refused.of(reply)
            if refused is not None:
                if step.releases_owed:
                    continue
                if refused.reason == "moved" and refused.next_ms is not None:
                    expected[step.name] = refused.next_ms  # another scheduler took the step
                else:
                    expected.pop(step.name, None)
                if refused.reason == "definition":
                    self._resync.add((step.queue, step.name))
                continue
            if step.plan is not None:
                if step.plan.next_ms is None:
                    expected.pop(step.name, None)  # the schedule has ended
                else:
                    expected[step.name] = step.plan.next_ms
            ids = ScheduleStore.parse_tick(reply) or []
            if ids:
                logger.info("schedule %s: enqueued %s", step.name, ", ".join(ids))
                enqueued += ids
        return enqueued

    def _resync_refused(self) -> None:
        """Write again the definitions of schedules whose steps were refused
        for another definition (another worker wrote its own: during a rolling
        deploy, the last to write wins; each rewrite restarts the schedule from
        its next tick, never at one already run)."""
        now = time.monotonic()
        for key in sorted(self._resync):
            if now - self._rewritten_at.get(key, float("-inf")) < 60:
                continue
            queue_name, name = key
            store = self.stores[queue_name]
            logger.warning("schedule %s: defined otherwise in Redis; writing this worker's definition", name)
            store.sync([self.schedules[queue_name][name]], store.server_now_ms(), retire=False)
            self._resync.discard(key)
            self._rewritten_at[key] = now


@dataclass(frozen=True)
class Step:
    """One schedule's step in a pass: a tick (with its plan), or an owed run."""

    queue: str
    name: str
    call: Call
    plan: Plan | None = None
    releases_owed: bool = False
