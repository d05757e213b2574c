"""What periodic jobs cost: 10 000 schedules on one queue, one scheduler.

Times a worker's start (writing every schedule to Redis) and the scheduler's
passes, one a second (one round trip each), with none due and with ticks
spread over an hour (about three due a second), on a private Redis.

    scripts/with-venv.sh python -m bench.schedules
"""

import statistics
import threading
import time

import redis

from django_jobqueue.devserver import RedisServer
from django_jobqueue.engine.queue import RedisJobQueue
from django_jobqueue.engine.schedules import Schedule
from django_jobqueue.worker.scheduler import Scheduler

N = 10_000


def main() -> None:
    srv = RedisServer().start()
    try:
        _measure(srv.port)
    finally:
        srv.cleanup()


def _measure(port: int) -> None:
    r = redis.Redis(port=port, decode_responses=True)
    q = RedisJobQueue(r, "jobs")
    for label, start, every in (("none due", 2_000_000_000_000, 86_400_000), ("about 3 due a second", 0, 3_600_000)):
        r.flushall()
        defs = [
            Schedule(name=f"s{i}", job="add", queue="jobs", every_ms=every, start_ms=start + i * 360, overlap="allow")
            for i in range(N)
        ]
        sched = Scheduler({"jobs": q}, {"jobs": defs}, threading.Event())
        t = time.perf_counter()
        sched.sync()
        sync_s = time.perf_counter() - t
        sched.run_once()
        r.config_resetstat()
        passes, fired = [], 0
        for _ in range(15):
            time.sleep(1)
            t = time.perf_counter()
            fired += len(sched.run_once())
            passes.append(time.perf_counter() - t)
        cs = r.info("commandstats")["cmdstat_evalsha"]
        median_ms, max_ms = statistics.median(passes) * 1000, max(passes) * 1000
        print(
            f"{label}: sync {sync_s:.2f} s; pass median {median_ms:.2f} ms, max {max_ms:.2f} ms; "
            f"runs {fired} in 15 passes; Redis {cs['usec'] / len(passes):.0f} us a pass ({cs['calls']} script calls)"
        )


if __name__ == "__main__":
    main()
