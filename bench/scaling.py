"""How drain throughput grows with queues spread over a Redis Cluster, against one node.

    python -m bench.scaling [--jobs 8000] [--drainers 2] [--repeat 3] [--json out.json]

For 1, 2 and 4 queues it enqueues ``--jobs`` jobs (split evenly over the
queues), then ``--drainers`` processes claim and complete them as fast as they
can (the engine's claim_nowait + complete: two script calls per job, no job
body), first on one redis-server, then on a local cluster of three primaries
with the queues spread over them. Every server is ours, on free 127.0.0.1
ports, and gone at the end.

Besides jobs/s it reports what one job costs the server (INFO commandstats
and INFO cpu deltas): round trips, Redis commands run (counting those inside
the scripts) and server CPU per job, and the drainers' own CPU per job. Those
two numbers are the model of docs/scaling.md: one Redis main thread saturates
near 1e6 / (server us per job) jobs/s; a cluster multiplies that by the number
of primaries, as long as the queues spread over them and the clients have the
cores to keep up.

On a small machine (this project's has 2 cores) the drainers and every
Redis process share the same cores, so the cluster cannot show its gain in
jobs/s here: the per-job costs are the figures that carry over.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from django_jobqueue.devserver import RedisServer  # noqa: E402
from django_jobqueue.queue import RedisJobQueue  # noqa: E402


def _client(url: str, cluster: bool) -> Any:
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, decode_responses=True)
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def _drain(url: str, cluster: bool, names: Sequence[str], start_at: float, out: Any) -> None:
    """One drainer process: claim + complete until every queue is empty."""
    client = _client(url, cluster)
    queues = [RedisJobQueue(client, n, cluster=cluster) for n in names]
    done, turn = 0, os.getpid()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while True:
        job = None
        for k in range(len(queues)):
            q = queues[(turn + k) % len(queues)]
            job = q.claim_nowait("bench")
            if job is not None:
                q.complete(job, None)
                done += 1
                break
        if job is None:
            break
        turn += 1
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out.put({"done": done, "cpu_s": cpu, "end": time.time()})
    client.close()


def _server_counters(nodes: Sequence[Any]) -> dict[str, float]:
    calls: dict[str, float] = {"cpu_s": 0.0}
    for node in nodes:
        cpu = node.info("cpu")
        calls["cpu_s"] += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        for name, stats in node.info("commandstats").items():
            key = name.removeprefix("cmdstat_")
            calls[key] = calls.get(key, 0) + int(stats["calls"])
            if key in ("evalsha", "eval"):
                calls["script_us"] = calls.get("script_us", 0) + int(stats["usec"])
    return calls


def measure(
    url: str, cluster: bool, names: Sequence[str], jobs: int, drainers: int, nodes: Sequence[Any], repeat: int
) -> dict:
    """The median (by drain rate) of ``repeat`` runs."""
    rows = sorted(
        (_measure_once(url, cluster, names, jobs, drainers, nodes) for _ in range(repeat)),
        key=lambda row: row["drain_jobs_per_s"],
    )
    return rows[len(rows) // 2]


def _measure_once(
    url: str, cluster: bool, names: Sequence[str], jobs: int, drainers: int, nodes: Sequence[Any]
) -> dict:
    client = _client(url, cluster)
    per_queue = jobs // len(names)
    for name in names:  # warm up: scripts cached on every node, connections open
        q = RedisJobQueue(client, name, cluster=cluster)
        q.enqueue({"warm": True}, name="bench")
        q.complete(q.claim_nowait("bench"), None)
    at_start = _server_counters(nodes)
    t0 = time.perf_counter()
    for name in names:
        RedisJobQueue(client, name, cluster=cluster).enqueue_many([{"n": n} for n in range(per_queue)], name="bench")
    enqueue_s = time.perf_counter() - t0
    before = _server_counters(nodes)
    enqueue_cpu_us = (before["cpu_s"] - at_start["cpu_s"]) * 1e6 / (per_queue * len(names))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5  # every drainer is up (spawned, imported) before the clock starts
    procs = [ctx.Process(target=_drain, args=(url, cluster, names, start_at, out)) for _ in range(drainers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    wall = max(r["end"] for r in results) - start_at
    after = _server_counters(nodes)
    done = sum(r["done"] for r in results)
    client.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    scripts = delta.get("evalsha", 0) + delta.get("eval", 0)
    # Commands a script runs are counted in commandstats too; the server's own
    # housekeeping (info, ping, cluster gossip helpers) is left out.
    ignore = {
        "cpu_s",
        "script_us",
        "info",
        "ping",
        "cluster|info",
        "cluster|nodes",
        "cluster|slots",
        "cluster|shards",
        "command",
    }
    inner = sum(v for k, v in delta.items() if k not in ignore) - scripts
    return {
        "queues": len(names),
        "jobs": done,
        "enqueue_jobs_per_s": round(per_queue * len(names) / enqueue_s),
        "drain_jobs_per_s": round(done / wall),
        "round_trips_per_job": round(scripts / done, 2),
        "redis_commands_per_job": round(inner / done, 1),
        "server_cpu_us_per_job": round(delta["cpu_s"] * 1e6 / done, 1),
        "server_cpu_us_per_enqueue": round(enqueue_cpu_us, 1),
        # Time spent running the two scripts (their commands included), out of
        # the CPU above; the rest is network I/O and the event loop.
        "script_us_per_job": round(delta.get("script_us", 0) / done, 1),
        "client_cpu_us_per_job": round(sum(r["cpu_s"] for r in results) * 1e6 / done, 1),
        "commands": {k: round(v / done, 2) for k, v in sorted(delta.items()) if k not in ignore and v},
    }


def single_node(jobs: int, drainers: int, queue_counts: Sequence[int], repeat: int) -> list[dict]:
    import redis

    rows = []
    with RedisServer() as server:
        node = redis.Redis(port=server.port, decode_responses=True)
        for n in queue_counts:
            node.flushall()
            names = [f"q{i}" for i in range(n)]
            row = measure(server.url, False, names, jobs, drainers, [node], repeat)
            row["setup"] = "one node"
            row["primaries_used"] = 1
            rows.append(row)
            print(_line(row), flush=True)
        node.close()
    return rows


def cluster(jobs: int, drainers: int, queue_counts: Sequence[int], repeat: int) -> list[dict]:
    from tests.helpers.cluster import LocalCluster

    rows = []
    # No replicas: on one small machine they would only take CPU from the
    # primaries; on real hardware each primary and replica has its own host.
    with LocalCluster(primaries=3, replicas=0) as c:
        nodes = [c.node(p) for p in c.primary_ports()]
        for n in queue_counts:
            c.flushall()
            spread = c.queue_names_on_distinct_primaries(min(n, 3))
            names = list(spread)
            stem = 0
            while len(names) < n:  # more queues than primaries: round-robin over them
                extra = c.queue_names_on_distinct_primaries(3, stem=f"x{stem}")
                names += extra[: n - len(names)]
                stem += 1
            row = measure(c.url, True, names, jobs, drainers, nodes, repeat)
            row["setup"] = "cluster, 3 primaries"
            row["primaries_used"] = len({c.primary_for_queue(q) for q in names})
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    return (
        f"{row['setup']:<22} {row['queues']} queue(s) on {row['primaries_used']} primary(ies): "
        f"drain {row['drain_jobs_per_s']:>6} jobs/s, enqueue {row['enqueue_jobs_per_s']:>6} jobs/s | per job: "
        f"{row['round_trips_per_job']} round trips, {row['redis_commands_per_job']} Redis commands, "
        f"server {row['server_cpu_us_per_job']} us CPU ({row['script_us_per_job']} in scripts; "
        f"+ {row['server_cpu_us_per_enqueue']} to enqueue), "
        f"drainers {row['client_cpu_us_per_job']} us CPU"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8000, help="jobs per measurement (split over the queues)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup; the median is reported")
    parser.add_argument("--drainers", type=int, default=2, help="drainer processes (default 2: one per core here)")
    parser.add_argument("--queues", default="1,2,4", help="queue counts to measure")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.queues.split(",")]
    print(
        f"machine: {os.cpu_count()} cores; drainers and every Redis process share them, "
        f"so jobs/s here is bounded by the machine, not by Redis",
        flush=True,
    )
    rows = single_node(args.jobs, args.drainers, counts, args.repeat)
    rows += cluster(args.jobs, args.drainers, counts, args.repeat)
    print("\nRedis commands per job (one node, one queue; commands run inside the scripts included):")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(rows[0]["commands"].items(), key=lambda kv: -kv[1])))
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
