"""Our reclaim sweep with many jobs in flight and a few due.

For each size N: enqueue N jobs, claim N - 10 of them with a long lease
(pipelined claim scripts, as many workers would), then, per repetition, claim
the last 10 with a 1 ms lease, let it run out, and time ``RedisJobQueue.sweep()``
(the worker's sweep: promote + reclaim + expire, one pipelined round trip),
checking that it handed back exactly those 10.

Where the due ids sit in the processing list matters (reclaim takes each one
off with LREM from the nearer end, judged by its claim time against the
claims at both ends): "oldest" makes them the oldest claims (moved to the tail,
their claim time set before every other's), whose lease normally runs out
first; "newest" leaves them at the head, where the claim put them (a worker
that died holding fresh claims). "none due" times a sweep that finds nothing
to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median
from typing import Any

DUE = 10
LONG_LEASE_MS = 3_600_000
CHUNK = 1000


def _ids(flat: list[Any]) -> str:
    it = iter(flat)
    return dict(zip(it, it, strict=True))["id"]


def measure(r: Any, sizes: tuple[int, ...], repeats: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    from django_jobqueue.engine import scripts
    from django_jobqueue.engine.ids import new_claim_token
    from django_jobqueue.queue import RedisJobQueue

    out = []
    for size in sizes:
        r.flushall()
        # max_attempts=0 (no limit): the same 10 jobs are claimed and reclaimed over and over.
        q = RedisJobQueue(r, "reclaim", visibility_ms=LONG_LEASE_MS, max_attempts=0, key_prefix="bench")
        claim = scripts.get("claim")
        keys = q._claim_keys()  # bench-only: the wrapper claims one job per round trip
        t0 = time.perf_counter()
        for start in range(0, size, CHUNK):
            q.enqueue_many([{} for _ in range(min(CHUNK, size - start))])
        long_claims = size - DUE
        for start in range(0, long_claims, CHUNK):
            count = min(CHUNK, long_claims - start)
            scripts.run_pipeline(r, [(claim, keys, [0, new_claim_token(), LONG_LEASE_MS, "bench-w", 100])] * count)
        mem = r.info("memory")["used_memory"]
        setup_s = time.perf_counter() - t0
        row: dict[str, Any] = {"in_flight": size, "due": DUE, "setup_s": setup_s, "used_memory": mem}
        for where in ("oldest", "newest", "none"):
            samples = []
            for _ in range(repeats):
                if where != "none":
                    claimed = scripts.run_pipeline(r, [(claim, keys, [0, new_claim_token(), 1, "bench-w", 100])] * DUE)
                    ids = [_ids(c) for c in claimed]
                    if where == "oldest":
                        pipe = r.pipeline(transaction=False)
                        for job_id in ids:
                            pipe.lrem(q.keys.processing, 1, job_id)
                            pipe.rpush(q.keys.processing, job_id)
                            pipe.hset(q.keys.job(job_id), "claimed_at_ms", 1)
                        pipe.execute()
                    time.sleep(0.005)
                t = time.perf_counter()
                res = q.sweep()
                samples.append((time.perf_counter() - t) * 1000)
                want = 0 if where == "none" else DUE
                if len(res.reclaimed) != want:
                    raise RuntimeError(
                        f"sweep reclaimed {len(res.reclaimed)} jobs ({where}), expected {want} "
                        f"({len(res.dead_lettered)} dead-lettered)"
                    )
            row[f"{where}_ms"] = median(samples)
            row[f"{where}_samples_ms"] = samples
        if r.llen(q.keys.processing) != size - DUE:
            raise RuntimeError("the processing list does not hold what the benchmark put there")
        log(
            f"   {size:>7,} in flight: sweep {row['oldest_ms']:.2f} ms (10 due, oldest), "
            f"{row['newest_ms']:.2f} ms (10 due, newest), {row['none_ms']:.2f} ms (none due); "
            f"set-up {setup_s:.1f} s"
        )
        out.append(row)
    return out
