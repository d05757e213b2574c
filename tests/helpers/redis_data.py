"""What Redis holds for a queue, read or written the way the tests look at it
(key prefix "queue", as tests/settings.py sets it)."""

from __future__ import annotations

import json
import time
from typing import Any

from django_jobqueue.engine.keys import GlobalKeys


def job_hash(r: Any, job_id: str, queue: str = "jobs") -> dict[str, str]:
    """Every field of the job's hash (``{}`` once it is gone)."""
    return r.hgetall(f"queue:{queue}:job:{job_id}")


def job_status(r: Any, job_id: str, queue: str = "jobs") -> str | None:
    return r.hget(f"queue:{queue}:job:{job_id}", "status")


def listen_to_events(r: Any, queue: str = "jobs") -> str:
    """Make the scripts write the events log of ``queue`` (as a listener asks
    them to); the key of that log."""
    r.set(f"queue:{queue}:events:listening", "1")
    return f"queue:{queue}:events:log"


def register_worker(r: Any, worker_id: str, running: list[Any], **fields: str) -> None:
    """A worker's record as a live worker keeps it, running ``running``
    ([queue, job id, claim token] each); ``fields`` replace its defaults."""
    keys = GlobalKeys("queue")
    now = int(time.time() * 1000)
    r.zadd(keys.workers, {worker_id: now})
    record = {
        "id": worker_id,
        "host": "box-1",
        "pid": "4242",
        "queues": json.dumps(["jobs"]),
        "concurrency": "2",
        "started_at_ms": str(now - 60_000),
        "beat_ms": str(now),
        "state": "running",
        "jobs": json.dumps(running),
        **fields,
    }
    r.hset(keys.worker(worker_id), mapping=record)


# What each named key holds (keys.py); prefixes and the events channel hold nothing.
KEY_TYPES = {
    "pending": "list",
    "processing": "list",
    "completed": "list",
    "failed": "list",
    "claiming": "list",
    "scheduled": "zset",
    "leases": "zset",
    "deadlines": "zset",
    "workers": "zset",
    "unique": "hash",
    "stats": "hash",
    "unstamped": "hash",
    "job": "hash",
    "worker": "hash",
    "paused": "string",
    "schedules": "zset",
    "schedules_owed": "set",
    "schedule": "hash",
    "schedule_runs": "list",
    "samples_hist": "hash",
    "limits": "hash",
    "limits_log": "list",
    "rate_log": "zset",
    "slots_freed": "list",
    "waiting_keys": "zset",
}
