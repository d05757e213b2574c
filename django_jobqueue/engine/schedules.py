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

import hashlib
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
# Late ticks of a cron schedule counted as missed, at most, per step.
LATE_COUNT_MAX = 10_000
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
        if self.catch_up == "all" and self.overlap != "allow":
            raise ScheduleError(f"{where}: catch_up 'all' runs every late tick at once: it needs overlap 'allow'")
        if self.jitter_ms < 0:
            raise ScheduleError(f"{where}: jitter must not be negative")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ScheduleError(f"{where}: end must be after start")
        try:
            self.zone  # noqa: B018 - checks the time zone
        except (KeyError, ValueError) as exc:
            raise ScheduleError(f"{where}: unknown time zone {self.timezone!r}") from exc
        if self.cron is not None:
            if len(self.cron.split()) != 5:
                raise ScheduleError(
                    f"{where}: a cron expression has five fields (minute hour day month weekday), got {self.cron!r}"
                )
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

    @property
    def spec_hash(self) -> str:
        """A digest of the definition: tick.lua takes a step only for the
        definition Redis holds (during a rolling deploy, not an older one)."""
        return hashlib.sha1(self.spec_json().encode()).hexdigest()[:16]  # noqa: S324 - an identity, not a secret

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

    def ticks_before(self, ms: int, count: int, not_before: int) -> list[int]:
        """Up to ``count`` ticks strictly before ``ms`` and at or after
        ``not_before``, oldest first."""
        found: list[int] = []
        if self.every_ms is not None:
            anchor = self.start_ms or 0
            tick = anchor + ((ms - 1 - anchor) // self.every_ms) * self.every_ms
            while len(found) < count and tick >= not_before:
                found.append(tick)
                tick -= self.every_ms
        else:
            from cronsim import CronSim

            assert self.cron is not None
            start = datetime.fromtimestamp(-(-ms // 1000), self.zone)
            for when in CronSim(self.cron.upper(), start, reverse=True):
                tick = int(when.timestamp()) * 1000
                if len(found) >= count or tick < not_before:
                    break
                if tick < ms:
                    found.append(tick)
        return found[::-1]

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
    """The step for the ticks from ``due_ms`` (the next tick, come) up to ``now_ms``.

    Ticks within LATE_AFTER_MS of ``now_ms`` are on time and each gets a run.
    Earlier ones are late: counted (arithmetic for an interval; for cron up to
    LATE_COUNT_MAX), and only the newest of them are ever enumerated, so a
    schedule stopped for a month plans as fast as one stopped for a minute.
    """
    cutoff = now_ms - LATE_AFTER_MS  # ticks before this are late
    on_time: list[int] = []
    tick: int | None = due_ms if due_ms >= cutoff else schedule.tick_after(cutoff - 1)
    while tick is not None and tick <= now_ms:
        on_time.append(tick)
        tick = schedule.tick_after(tick)
    following = tick
    if due_ms >= cutoff:
        return Plan(on_time, 0, following)
    # Late ticks end at the cutoff, or with the schedule.
    limit = cutoff if schedule.end_ms is None else min(cutoff, schedule.end_ms + 1)
    late = _count_late(schedule, due_ms, limit)
    keep = {"all": CATCH_UP_MAX, "once": 1}.get(schedule.catch_up, 0)
    kept = schedule.ticks_before(limit, min(keep, late), due_ms) if keep else []
    return Plan(kept + on_time, late - len(kept), following)


def _count_late(schedule: Schedule, due_ms: int, cutoff: int) -> int:
    """How many ticks from ``due_ms`` (one, come) to before ``cutoff``."""
    if cutoff <= due_ms:
        return 0
    if schedule.every_ms is not None:
        return (cutoff - 1 - due_ms) // schedule.every_ms + 1
    count, tick = 0, due_ms
    while tick < cutoff and count < LATE_COUNT_MAX:
        count += 1
        following = schedule.tick_after(tick)
        if following is None:
            break
        tick = following
    return count


@dataclass(frozen=True)
class Refused:
    """Why tick.lua changed nothing (its reply)."""

    # "moved": another scheduler took the step (next_ms: where the tick is now,
    # None when the schedule ended or is gone); "definition": Redis holds
    # another definition of the schedule; "clock": the caller planned for a
    # time ahead of the server's.
    reason: str
    next_ms: int | None = None

    @staticmethod
    def of(reply: Any) -> Refused | None:
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], int):
            return None
        if reply[0] == -1:
            current = _s(reply[1]) if len(reply) > 1 else ""
            moved = None if current in ("", "inf", "+inf") else int(float(current))
            return Refused("moved", moved)
        return Refused("definition" if reply[0] == -2 else "clock")


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
            second = None if first is None else s.tick_after(first)
            keys = script.keys_for(self.keys, schedule=self.keys.schedule(s.name))
            args = script.argv_for(
                name=s.name,
                spec=s.spec_json(),
                spec_hash=s.spec_hash,
                first_ms="" if first is None else first,
                second_ms="" if second is None else second,
                paused="1" if s.paused else "",
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
        ids enqueued, or None when the step was refused (see Refused)."""
        return self.run(self.tick_call(schedule, due_ms, now_ms, plan(schedule, due_ms, now_ms)))

    def tick_call(self, schedule: Schedule, due_ms: int, now_ms: int, step: Plan) -> Call:
        """The script call of a step planned for ``now_ms``, for a pipeline of several."""
        runs = [(t, new_job_id(), schedule.jitter_for(t)) for t in step.runs]
        return self._tick_call(schedule, due_ms, step.next_ms, step.missed, runs, now_ms, owed=False)

    def release_owed(self, schedule: Schedule, now_ms: int) -> list[str]:
        """Enqueue the run ``schedule`` owes (overlap "queue") if its last run has finished."""
        return self.run(self.release_owed_call(schedule, now_ms)) or []

    def release_owed_call(self, schedule: Schedule, now_ms: int) -> Call:
        return self._tick_call(schedule, 0, None, 0, [(now_ms, new_job_id(), 0)], now_ms, owed=True)

    def run_now(self, schedule: Schedule, now_ms: int) -> list[str]:
        """An extra run now, as a tick would make it (overlap and pause respected),
        leaving the next tick where it is."""
        state = self.state(schedule.name)
        due = state.get("next_ms")
        if due is None:
            raise ScheduleError(f"schedule {schedule.name!r} has no next tick (no worker has started it, or it ended)")
        if state.get("spec_hash") != schedule.spec_hash:
            raise ScheduleError(f"schedule {schedule.name!r} is defined otherwise in Redis (restart the workers)")
        # The step tick.lua takes, with the next tick left where it is. A
        # scheduler that moved it on meanwhile wins; the caller may try again.
        runs = [(now_ms, new_job_id(), 0)]
        return self.run(self._tick_call(schedule, int(due), int(due), 0, runs, now_ms, owed=False)) or []

    def run(self, call: Call) -> list[str] | None:
        script, keys, args = call
        return self.parse_tick(script(self.queue.client, keys, args))

    @staticmethod
    def parse_tick(reply: Any) -> list[str] | None:
        """The ids a tick.lua call enqueued, or None when it refused the step."""
        if Refused.of(reply) is not None:
            return None
        return [_s(i) for i in reply]

    def _tick_call(
        self,
        schedule: Schedule,
        expected_ms: int,
        next_ms: int | None,
        missed: int,
        runs: Sequence[tuple[int, str, int]],
        planned_ms: int,
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
            spec_hash=schedule.spec_hash,
            planned_ms=planned_ms,
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
