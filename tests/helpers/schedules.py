"""Periodic jobs for the tests: a schedule, the store on the test's clock, and
one scheduler pass driven by the test."""

from __future__ import annotations

from django_jobqueue.engine.schedules import Schedule, ScheduleStore
from django_jobqueue.queue import RedisJobQueue


def every(seconds: float, **options) -> Schedule:
    return Schedule(name="tick", job="add", queue="jobs", every_ms=int(seconds * 1000), **options)


def synced(r, clock, schedule: Schedule) -> tuple[RedisJobQueue, ScheduleStore]:
    """The "jobs" queue on the test's clock, and its schedules store with ``schedule`` written to Redis."""
    q = RedisJobQueue(r, "jobs", clock=clock)
    store = ScheduleStore(q)
    store.sync([schedule], clock())
    return q, store


def step(store: ScheduleStore, schedule: Schedule) -> list[str]:
    """One scheduler pass over ``store`` for ``schedule``: the runs enqueued."""
    script, keys, args = store.due_call()
    now, due, owed = ScheduleStore.parse_due(script(store.queue.client, keys, args))
    out: list[str] = []
    for _name, due_ms in due:
        out += store.tick(schedule, due_ms, now) or []
    for _name in owed:
        out += store.release_owed(schedule, now)
    return out
