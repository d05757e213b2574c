"""What no queue on this machine can beat: one client's round trips.

- redis-py loops, one call at a time, on one connection (hiredis parser when
  installed), like one worker thread: PING, and EVALSHA of a one-INCR script.
- Our engine without Django, the worker or threads: RedisJobQueue.enqueue_encoded
  in a loop, and claim_nowait + complete in a loop. The gap to the full
  enqueue() and to the worker is Python overhead above the engine.
- redis-benchmark (when on PATH) for the commands our scripts use, with one
  client (a single connection's ceiling) and with 50 (the server's).
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

INCR_SCRIPT = "return redis.call('INCR', KEYS[1])"


def _rate(fn: Any, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def loops(port: int, n: int) -> dict[str, float]:
    import redis

    r = redis.Redis(port=port, single_connection_client=True)
    r.ping()
    sha = r.script_load(INCR_SCRIPT)
    out = {
        "ping": _rate(r.ping, n),
        "evalsha": _rate(lambda: r.evalsha(sha, 1, "bench:ceiling"), n),
    }
    r.close()
    return out


def engine_loops(port: int, n: int) -> dict[str, float]:
    import redis

    from django_jobqueue.queue import RedisJobQueue

    r = redis.Redis(port=port, decode_responses=True, single_connection_client=True)
    q = RedisJobQueue(r, "ceiling", key_prefix="bench")
    enqueue = _rate(lambda: q.enqueue_encoded("{}", name="bench.noop"), n)

    def claim_complete() -> None:
        job = q.claim_nowait("bench-ceiling")
        if job is None:
            raise RuntimeError("the ceiling queue ran dry")
        q.complete(job, None)

    cycle = _rate(claim_complete, n)
    r.close()
    return {"enqueue_encoded": enqueue, "claim_nowait+complete": cycle}


COMMANDS: list[tuple[str, list[str]]] = [
    ("PING", ["PING"]),
    ("INCR", ["INCR", "bench:rb:counter"]),
    ("LPUSH", ["LPUSH", "bench:rb:list", "0123456789abcdef0123456789abcdef0123"]),
    ("LMOVE", ["LMOVE", "bench:rb:list", "bench:rb:list", "RIGHT", "LEFT"]),
    ("HSET", ["HSET", "bench:rb:hash", "status", "processing"]),
    ("HGETALL", ["HGETALL", "bench:rb:hash"]),
    ("ZADD", ["ZADD", "bench:rb:zset", "1700000000000", "0123456789abcdef0123456789abcdef0123"]),
    ("PUBLISH", ["PUBLISH", "bench:rb:events", '{"id":"x","event":"completed"}']),
    ("EVALSHA", []),  # the one-INCR script, filled in below
]

_RPS = re.compile(r"([\d.]+) requests per second")
_P50 = re.compile(r"p50=([\d.]+) msec")


def redis_benchmark(binary: str, port: int, n: int) -> list[dict[str, Any]]:
    import redis

    r = redis.Redis(port=port, decode_responses=True)
    sha = r.script_load(INCR_SCRIPT)
    r.hset("bench:rb:hash", mapping={f"f{i}": "v" for i in range(10)})
    r.close()
    out = []
    for clients in (1, 50):
        for name, argv in COMMANDS:
            if clients > 1 and name not in ("PING", "EVALSHA"):
                continue
            if name == "EVALSHA":
                argv = ["EVALSHA", sha, "1", "bench:rb:counter"]
            cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(n), "-q", *argv]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            text = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr
            rps, p50 = _RPS.search(text), _P50.search(text)
            out.append(
                {
                    "command": name,
                    "clients": clients,
                    "rps": float(rps.group(1)) if rps else None,
                    "p50_ms": float(p50.group(1)) if p50 else None,
                }
            )
    return out
