"""The enqueuing side of each system, run in a child process of its own.

    python -m bench.client SYSTEM single N
    python -m bench.client SYSTEM bulk N
    python -m bench.client SYSTEM latency SAMPLES TIME_CAP_SECONDS
    python -m bench.client ping single N          (a redis-py PING loop: the floor)
    python -m bench.client jobqueue async-bulk N  (ours only: N jobs of the async handler)
    python -m bench.client jobqueue aenqueue N CALLERS   (ours only: one loop, CALLERS tasks)
    python -m bench.client jobqueue threads N THREADS    (ours only: enqueue() from THREADS threads)

Each prints one JSON line. Timing covers the enqueue calls only, never the
imports or the set-up, so every system pays its start-up cost outside it.
A child per system keeps their global state (Django settings, Celery's app,
Dramatiq's global broker) apart.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import STARTS, client

CHUNK = 1000  # bulk calls add at most this many jobs each, like our enqueue_many


class Enqueuer:
    """How one system enqueues: a noop job, many noop jobs, a latency job."""

    def __init__(self, one: Callable[[], Any], many: Callable[[int], Any] | None, latency: Callable[[], Any]):
        self.one, self.many, self.latency = one, many, latency


def jobqueue() -> Enqueuer:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django_jobqueue import enqueue, enqueue_many

    return Enqueuer(
        lambda: enqueue("bench.noop", {}),
        lambda n: enqueue_many("bench.noop", [{} for _ in range(n)]),
        lambda: enqueue("bench.latency", {}),
    )


def rq() -> Enqueuer:
    from redis import Redis
    from rq import Queue

    from bench.common import redis_url
    from bench.peers import rq_jobs

    q = Queue("bench", connection=Redis.from_url(redis_url()))
    return Enqueuer(
        lambda: q.enqueue(rq_jobs.noop),
        lambda n: q.enqueue_many([Queue.prepare_data(rq_jobs.noop) for _ in range(n)]),
        lambda: q.enqueue(rq_jobs.latency),
    )


def celery() -> Enqueuer:
    from celery import group

    from bench.peers.celery_app import latency, noop

    return Enqueuer(noop.delay, lambda n: group(noop.s() for _ in range(n)).apply_async(), latency.delay)


def dramatiq() -> Enqueuer:
    import dramatiq as dq

    from bench.peers.dramatiq_app import latency, noop

    return Enqueuer(noop.send, lambda n: dq.group(noop.message() for _ in range(n)).run(), latency.send)


def huey() -> Enqueuer:
    from bench.peers.huey_app import latency, noop

    return Enqueuer(noop, None, latency)


FACTORIES = {
    "jobqueue": jobqueue,
    "rq-fork": rq,
    "rq-simple": rq,
    "celery-prefork": celery,
    "celery-threads": celery,
    "dramatiq": dramatiq,
    "huey": huey,
}


def single(e: Enqueuer, n: int) -> dict[str, Any]:
    one = e.one
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    return {"n": n, "seconds": time.perf_counter() - t0}


def bulk(e: Enqueuer, n: int) -> dict[str, Any]:
    if e.many is None:
        # No bulk API: the jobs still have to be there for the drain.
        out = single(e, n)
        out["bulk"] = False
        return out
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        e.many(min(CHUNK, n - start))
    return {"n": n, "seconds": time.perf_counter() - t0, "bulk": True}


def latency(e: Enqueuer, samples: int, cap_s: float) -> dict[str, Any]:
    """Enqueue one job, wait until it has started, pause (the worker goes
    idle again), repeat. Enqueue-to-start = the job's recorded start time
    minus the time just before the enqueue call (one machine, one clock)."""
    r = client()
    r.delete(STARTS)
    # Warm-up: the first jobs also wait for the worker to start and connect.
    for _ in range(3):
        e.latency()
        if r.blpop([STARTS], timeout=60) is None:
            return {"error": "the worker did not start a job within 60 s"}
    rng = random.Random(42)  # noqa: S311 - jitter, not security
    out: list[float] = []
    deadline = time.monotonic() + cap_s
    while len(out) < samples and time.monotonic() < deadline:
        # 20-100 ms of quiet, jittered so we never fall into step with a poller.
        time.sleep(rng.uniform(0.02, 0.1))
        t0 = time.time()
        e.latency()
        got = r.blpop([STARTS], timeout=30)
        if got is None:
            return {"error": "a latency job did not start within 30 s", "samples": out}
        out.append(float(got[1]) - t0)
    return {"samples": out}


def ping(n: int) -> dict[str, Any]:
    """The floor for one call at a time: PING on a default redis-py client
    (a connection pool, hiredis when installed), like an enqueue's one round trip."""
    import redis

    from bench.common import redis_url

    r = redis.Redis.from_url(redis_url())
    r.ping()
    t0 = time.perf_counter()
    for _ in range(n):
        r.ping()
    return {"n": n, "seconds": time.perf_counter() - t0}


def async_bulk(n: int) -> dict[str, Any]:
    """Ours only: the async drain's jobs (bench.async_sleep), enqueued in bulk."""
    from django_jobqueue import enqueue_many

    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        enqueue_many("bench.async_sleep", [{} for _ in range(min(CHUNK, n - start))])
    return {"n": n, "seconds": time.perf_counter() - t0}


def aenqueue_concurrent(n: int, callers: int) -> dict[str, Any]:
    """Ours only: ``await aenqueue()`` one job per call, from ``callers`` tasks
    gathered on one event loop, n // callers calls each. One untimed call per
    task first, so the loop's client and its connections are made outside
    the timing (as the threads' are in ``threads_concurrent``)."""
    import asyncio

    from django_jobqueue import aenqueue

    each = n // callers

    async def caller(count: int) -> None:
        for _ in range(count):
            await aenqueue("bench.noop", {})

    async def run() -> float:
        await asyncio.gather(*(caller(1) for _ in range(callers)))
        t0 = time.perf_counter()
        await asyncio.gather(*(caller(each) for _ in range(callers)))
        return time.perf_counter() - t0

    return {"n": each * callers, "seconds": asyncio.run(run())}


def threads_concurrent(n: int, threads: int) -> dict[str, Any]:
    """Ours only: ``enqueue()`` one job per call from ``threads`` threads,
    n // threads calls each, all let go at once after an untimed call each."""
    import threading

    from django_jobqueue import enqueue

    each = n // threads
    gate = threading.Barrier(threads + 1)

    def caller() -> None:
        enqueue("bench.noop", {})
        gate.wait()
        for _ in range(each):
            enqueue("bench.noop", {})

    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return {"n": each * threads, "seconds": time.perf_counter() - t0}


def main(argv: list[str]) -> int:
    system, op, *rest = argv
    if system == "ping":
        print(json.dumps(ping(int(rest[0]))))
        return 0
    e = FACTORIES[system]()
    if op == "single":
        res = single(e, int(rest[0]))
    elif op == "bulk":
        res = bulk(e, int(rest[0]))
    elif op == "latency":
        res = latency(e, int(rest[0]), float(rest[1]))
    elif op == "async-bulk" and system == "jobqueue":
        res = async_bulk(int(rest[0]))
    elif op == "aenqueue" and system == "jobqueue":
        res = aenqueue_concurrent(int(rest[0]), int(rest[1]))
    elif op == "threads" and system == "jobqueue":
        res = threads_concurrent(int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown op {op!r}")
    print(json.dumps(res))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
