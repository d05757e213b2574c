"""Periodic jobs: schedules whose ticks the workers enqueue, each exactly once.

A schedule names a job, a calendar (a cron expression in a time zone, or a
fixed interval) and what to do with ticks that cannot run as planned. Its
state lives in Redis beside the queue it enqueues into (keys.py: the
``schedules`` sorted set of next ticks, a hash per schedule), so in cluster
mode it shares the queue's slot.

There is no leader. Every scheduler reads the due schedules (one script call
per queue, reading only those due), computes each one's ticks here (the
calendar arithmetic is Python's: zoneinfo and, for cron, cronsim), and calls
tick.lua, which moves the next tick on and enqueues the runs in one atomic
step, only if the next tick is still the one it read: of several schedulers,
or a restarted one, exactly one enqueues each tick. Time is the Redis
server's.

Catching up: a tick enqueued more than LATE_AFTER_MS after its time is late.
``catch_up="skip"`` passes late ticks over (reported as missed), ``"once"``
runs one run for all of them, ``"all"`` runs each, up to CATCH_UP_MAX.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from . import scripts
from .ids import new_job_id
from .keys import validate_name
from .queue import RedisJobQueue
from .replies import _s

OVERLAP = ("skip", "allow", "queue")
CATCH_UP = ("skip", "once", "all")
# A tick enqueued later than this after its time is late (catch_up decides).
LATE_AFTER_MS = 60_000
# Runs one catch-up ("all") enqueues at most; the older late ticks are missed.
CATCH_UP_MAX = 100
# Due schedules one scheduler pass reads per queue.
DUE_LIMIT = 1000
MIN_EVERY_MS = 1000

Call = tuple[scripts.Script, list[str], list[Any]]


class ScheduleError(ValueError):
    """A schedule's definition is not valid; the message names the schedule."""


@dataclass(frozen=True)
class Schedule:
    """One schedule, as plain values (the Django face builds them from @job and settings)."""

    name: str
    job: str
    queue: str
    payload_json: str = "null"
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    overlap: str = "skip"
    catch_up: str = "skip"
    jitter_ms: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    paused: bool = False
    max_attempts: int = 3
    ttl_ms: int = 0

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        try:
            validate_name("schedule name", self.name)  # it is part of key names
        except ValueError as exc:
            raise ScheduleError(str(exc)) from None
        if (self.cron is None) == (self.every_ms is None):
            raise ScheduleError(f"{where}: give exactly one of cron and every")
        if self.every_ms is not None and self.every_ms < MIN_EVERY_MS:
            raise ScheduleError(f"{where}: every must be at least 1 second, got {self.every_ms} ms")
        if self.overlap not in OVERLAP:
            raise ScheduleError(f"{where}: overlap must be one of {', '.join(OVERLAP)}, got {self.overlap!r}")
        if self.catch_up not in CATCH_UP:
            raise ScheduleError(f"{where}: catch_up must be one of {', '.join(CATCH_UP)}, got {self.catch_up!r}")
        if self.jitter_ms < 0:
            raise ScheduleError(f"{where}: jitter must not be negative")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ScheduleError(f"{where}: end must be after start")
        try:
            self.zone  # noqa: B018 - checks the time zone
        except (KeyError, ValueError) as exc:
            raise ScheduleError(f"{where}: unknown time zone {self.timezone!r}") from exc
        if self.cron is not None:
            try:
                from cronsim import CronSimError
            except ImportError:
                raise ScheduleError(
                    f"{where}: cron expressions need cronsim: pip install 'django-jobqueue[cron]'"
                ) from None
            try:
                self._cron_after(0)
            except CronSimError as exc:
                raise ScheduleError(f"{where}: bad cron expression {self.cron!r}: {exc}") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def spec_json(self) -> str:
        """The definition as compact JSON: a change restarts the schedule from now."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def tick_after(self, ms: int) -> int | None:
        """The first tick strictly after ``ms`` (epoch ms), or None past ``end``."""
        if self.start_ms is not None and ms < self.start_ms:
            ms = self.start_ms - 1
        if self.every_ms is not None:
            # Counted from start (or the epoch), so every scheduler finds the same ticks.
            anchor = self.start_ms or 0
            tick = anchor + ((ms - anchor) // self.every_ms + 1) * self.every_ms
        else:
            tick = self._cron_after(ms)
        if self.end_ms is not None and tick > self.end_ms:
            return None
        return tick

    def _cron_after(self, ms: int) -> int:
        from cronsim import CronSim

        assert self.cron is not None
        # cronsim works in whole seconds and returns the first match after its start.
        start = datetime.fromtimestamp(ms // 1000, self.zone)
        return int(next(CronSim(self.cron.upper(), start)).timestamp()) * 1000

    def jitter_for(self, tick: int) -> int:
        """A delay in [0, jitter] for the run of ``tick``: the same for every scheduler."""
        if not self.jitter_ms:
            return 0
        return zlib.crc32(f"{self.name}:{tick}".encode()) % (self.jitter_ms + 1)


@dataclass(frozen=True)
class Plan:
    """What one step of a schedule does with the ticks that have come."""

    runs: list[int]  # the ticks to enqueue a run for, in order
    missed: int  # ticks passed over as too late
    next_ms: int | None  # the next tick after this step (None: the schedule has ended)


def plan(schedule: Schedule, due_ms: int, now_ms: int) -> Plan:
    """The step for the ticks from ``due_ms`` (the next tick, come) up to ``now_ms``."""
    ticks = [due_ms]
    following = schedule.tick_after(due_ms)
    while following is not None and following <= now_ms and len(ticks) <= 100_000:
        ticks.append(following)
        following = schedule.tick_after(following)
    late = [t for t in ticks if now_ms - t > LATE_AFTER_MS]
    on_time = ticks[len(late) :]
    if schedule.catch_up == "all":
        kept = late[-CATCH_UP_MAX:]
        return Plan(kept + on_time, len(late) - len(kept), following)
    if schedule.catch_up == "once" and late:
        return Plan([late[-1], *on_time], len(late) - 1, following)
    return Plan(on_time, len(late), following)


class ScheduleStore:
    """The schedules of one queue in Redis: their state, the due ones, their ticks."""

    def __init__(self, queue: RedisJobQueue) -> None:
        self.queue = queue
        self.keys = queue.keys

    def sync(self, schedules: Iterable[Schedule], now_ms: int, *, retire: bool = True) -> None:
        """Write each schedule's definition (a new or changed one starts from
        its first tick after ``now_ms``); with ``retire``, forget the ones of
        this queue no longer defined (their past runs stay)."""
        script = scripts.get("schedule_sync")
        defined = list(schedules)
        calls = []
        for s in defined:
            first = s.tick_after(now_ms)
            keys = script.keys_for(self.keys, schedule=self.keys.schedule(s.name))
            args = script.argv_for(
                name=s.name, spec=s.spec_json(), first_ms="" if first is None else first, paused="1" if s.paused else ""
            )
            calls.append((script, keys, args))
        if calls:
            scripts.run_pipeline(self.queue.client, calls)
        if retire:
            known = {s.name for s in defined}
            gone = [n for n in self.names() if n not in known]
            for name in gone:
                self.retire(name)

    def server_now_ms(self) -> int:
        """The Redis server's clock, which every schedule goes by."""
        seconds, micros = self.queue.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def ensure(self, schedule: Schedule) -> None:
        """Sync one schedule as a worker starting would (a schedule no worker
        has started yet gets its first tick), forgetting none."""
        self.sync([schedule], self.server_now_ms(), retire=False)

    def names(self) -> list[str]:
        """Every schedule of this queue in Redis (an ended one has an infinite next tick)."""
        return sorted(_s(n) for n in self.queue.client.zrange(self.keys.schedules, 0, -1))

    def retire(self, name: str) -> None:
        pipe = self.queue.client.pipeline(transaction=False)
        pipe.zrem(self.keys.schedules, name)
        pipe.srem(self.keys.schedules_owed, name)
        pipe.delete(self.keys.schedule(name), self.keys.schedule_runs(name))
        pipe.execute()

    def recent_runs(self, name: str, count: int = 10) -> list[tuple[str, str | None]]:
        """(id, status) of the schedule's latest runs, newest first (None: the job is gone)."""
        ids = [_s(i) for i in self.queue.client.lrange(self.keys.schedule_runs(name), 0, count - 1)]
        pipe = self.queue.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "status")
        statuses = pipe.execute() if ids else []
        return [(i, None if st is None else _s(st)) for i, st in zip(ids, statuses, strict=True)]

    def due_call(self, limit: int = DUE_LIMIT) -> Call:
        """The read of due schedules, for a pipeline across queues."""
        script = scripts.get("schedules_due")
        return script, script.keys_for(self.keys), script.argv_for(now=self.queue._now(), limit=limit)

    @staticmethod
    def parse_due(reply: Sequence[Any]) -> tuple[int, list[tuple[str, int]], list[str]]:
        """(server now, [(name, due tick)], [names whose owed run may go]) from schedules_due.lua."""
        now, flat, ready = reply
        due = [(_s(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        return int(now), due, [_s(n) for n in ready]

    def tick(self, schedule: Schedule, due_ms: int, now_ms: int) -> list[str] | None:
        """Take one step of ``schedule`` whose tick ``due_ms`` has come: the
        ids enqueued, or None when another scheduler took this step first."""
        return self.run(self.tick_call(schedule, due_ms, now_ms))

    def tick_call(self, schedule: Schedule, due_ms: int, now_ms: int) -> Call:
        """The script call of tick(), for a pipeline of several schedules' steps."""
        step = plan(schedule, due_ms, now_ms)
        runs = [(t, new_job_id(), schedule.jitter_for(t)) for t in step.runs]
        return self._tick_call(schedule, due_ms, step.next_ms, step.missed, runs, owed=False)

    def release_owed(self, schedule: Schedule, now_ms: int) -> list[str]:
        """Enqueue the run ``schedule`` owes (overlap "queue") if its last run has finished."""
        return self.run(self.release_owed_call(schedule, now_ms)) or []

    def release_owed_call(self, schedule: Schedule, now_ms: int) -> Call:
        return self._tick_call(schedule, 0, None, 0, [(now_ms, new_job_id(), 0)], owed=True)

    def run_now(self, schedule: Schedule, now_ms: int) -> list[str]:
        """An extra run now, as a tick would make it (overlap and pause respected),
        leaving the next tick where it is."""
        due = self.state(schedule.name).get("next_ms")
        if due is None:
            raise ScheduleError(f"schedule {schedule.name!r} has no next tick (not synced, or ended)")
        # The step tick.lua takes, with the next tick left where it is. A
        # scheduler that moved it on meanwhile wins; the caller may try again.
        return self.run(self._tick_call(schedule, int(due), int(due), 0, [(now_ms, new_job_id(), 0)], owed=False)) or []

    def run(self, call: Call) -> list[str] | None:
        script, keys, args = call
        return self.parse_tick(script(self.queue.client, keys, args))

    @staticmethod
    def parse_tick(reply: Any) -> list[str] | None:
        """The ids a tick.lua call enqueued, or None when its tick had moved on."""
        if not isinstance(reply, list):
            return None
        return [_s(i) for i in reply]

    @staticmethod
    def moved_to(reply: Any) -> int | None:
        """Where the next tick was when a tick.lua call found it moved on
        (None: the schedule is gone or has ended, or the call did not find it moved)."""
        if isinstance(reply, bytes | str) and _s(reply) not in ("inf", "+inf"):
            return int(float(_s(reply)))
        return None

    def _tick_call(
        self,
        schedule: Schedule,
        expected_ms: int,
        next_ms: int | None,
        missed: int,
        runs: Sequence[tuple[int, str, int]],
        *,
        owed: bool,
    ) -> Call:
        script = scripts.get("tick")
        keys = script.keys_for(
            self.keys, schedule=self.keys.schedule(schedule.name), schedule_runs=self.keys.schedule_runs(schedule.name)
        )
        args = script.argv_for(
            now=self.queue._now(),
            name=schedule.name,
            expected_ms=expected_ms,
            next_ms="" if next_ms is None else next_ms,
            overlap=schedule.overlap,
            queue=self.queue.queue_name,
            job=schedule.job,
            payload=schedule.payload_json,
            max_attempts=schedule.max_attempts,
            ttl_ms=schedule.ttl_ms,
            missed=missed,
            owed="1" if owed else "",
            runs=[value for run in runs for value in run],
        )
        return script, keys, args

    def state(self, name: str) -> dict[str, str]:
        """A schedule's fields in Redis (empty when it has none)."""
        return {_s(k): _s(v) for k, v in self.queue.client.hgetall(self.keys.schedule(name)).items()}

    def pause(self, name: str) -> None:
        self.queue.client.hset(self.keys.schedule(name), "paused", "1")

    def resume(self, name: str) -> None:
        self.queue.client.hdel(self.keys.schedule(name), "paused")
