"""One reading of every queue and worker for the Prometheus metrics (metrics_collector.py).

A scrape costs a fixed number of Redis calls whatever the queues hold: the
server's time, one pipeline of counts (LLEN, ZCARD, the counters hash, the
oldest pending id, the pause flag, the live workers), one pipeline of the
oldest jobs' enqueue times and the live workers' records (at most
WORKERS_READ), and one call per queue for its histograms. Nothing here walks a
list of jobs.

Values come from Redis and may have been written by hand: a counter that is
not an integer is left out, a worker record that cannot be read counts no
queues, rather than failing the whole scrape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .engine import browse
from .engine.keys import GlobalKeys, QueueKeys
from .engine.samples import Histogram, due_ms, read_histograms

# The live workers whose records are read (newest heartbeat first): past this many,
# jobq_workers_alive per queue counts only these; the total (ZCOUNT) stays exact.
WORKERS_READ = 500
DEPTHS = ("pending", "processing", "scheduled", "completed", "failed")


@dataclass(frozen=True)
class QueueReading:
    name: str
    depths: dict[str, int]  # state (DEPTHS) -> jobs
    counters: dict[str, int]  # the shared counters hash (<prefix>:<queue>:stats), integers only
    oldest_pending_age_s: float | None  # None: nothing pending
    paused: str  # "none", "in", "out" or "all"
    histograms: dict[str, Histogram]  # "duration", "latency"
    workers_alive: int  # live workers that serve this queue
    concurrency: int  # their runner threads, together


@dataclass(frozen=True)
class Reading:
    queues: list[QueueReading]
    workers_alive: int  # every live worker, whatever its queues


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    """An integer a float holds exactly (Prometheus's values are floats); None otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if abs(number) < 2**53 else None


def _worker_queues(raw: Any) -> list[str]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else []
    except (ValueError, RecursionError):  # not what a worker writes
        return []
    return [q for q in value if isinstance(q, str)] if isinstance(value, list) else []


def read(client: Any, queues: dict[str, QueueKeys], global_keys: GlobalKeys, worker_timeout_s: float) -> Reading:
    """The state of ``queues`` (name -> keys) and of the live workers: those whose
    heartbeat, on the Redis server's clock, is under ``worker_timeout_s`` old."""
    now_ms = browse.server_time_ms(client)
    alive_since = now_ms - worker_timeout_s * 1000

    pipe = client.pipeline(transaction=False)
    for k in queues.values():
        for key in (k.pending, k.processing, k.claiming, k.completed, k.failed):
            pipe.llen(key)
        pipe.zcard(k.scheduled)
        pipe.hgetall(k.stats)
        pipe.lindex(k.pending, -1)
        pipe.get(k.paused)
    pipe.zcount(global_keys.workers, alive_since, "+inf")
    pipe.zrevrangebyscore(global_keys.workers, "+inf", alive_since, start=0, num=WORKERS_READ)
    *per_queue, alive_total, alive_ids = pipe.execute()
    counts = {name: per_queue[i * 9 : i * 9 + 9] for i, name in enumerate(queues)}

    # The oldest pending job's enqueue time, and what each live worker serves.
    oldest_ids = {name: c[7] for name, c in counts.items() if c[7] is not None}
    pipe = client.pipeline(transaction=False)
    for name, job_id in oldest_ids.items():
        pipe.hmget(queues[name].job(_s(job_id)), "enqueued_at_ms", "run_at_ms")
    for wid in alive_ids:
        pipe.hmget(global_keys.worker(_s(wid)), "queues", "concurrency")
    replies = pipe.execute() if oldest_ids or alive_ids else []
    # Due since: enqueued, or its delay or backoff over (as the latency histogram counts).
    due_at = {name: due_ms(*times) for name, times in zip(oldest_ids, replies[: len(oldest_ids)], strict=True)}
    records = replies[len(oldest_ids) :]

    served: dict[str, list[int]] = {name: [0, 0] for name in queues}  # name -> [workers, runners]
    for raw_queues, raw_concurrency in records:
        runners = max(0, _int(raw_concurrency) or 0)
        for q in set(_worker_queues(raw_queues)) & set(served):
            served[q][0] += 1
            served[q][1] += runners

    out = []
    for name, k in queues.items():
        pending, processing, claiming, completed, failed, scheduled, counters, _oldest, paused = counts[name]
        due = due_at.get(name)
        out.append(
            QueueReading(
                name=name,
                depths={
                    "pending": pending,
                    # Claimed jobs not yet stamped (claiming) are being handed to a worker: processing.
                    "processing": processing + claiming,
                    "scheduled": scheduled,
                    "completed": completed,
                    "failed": failed,
                },
                counters={
                    _s(field): number for field, value in counters.items() if (number := _int(value)) is not None
                },
                oldest_pending_age_s=None if due is None else max(0, now_ms - due) / 1000,
                paused=_s(paused) if paused else "none",
                histograms=read_histograms(client, k),
                workers_alive=served[name][0],
                concurrency=served[name][1],
            )
        )
    return Reading(queues=out, workers_alive=int(alive_total))
