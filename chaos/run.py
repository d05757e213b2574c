"""The chaos run: jobs enqueued and run by real worker processes while workers are
SIGKILLed and Redis itself is SIGKILLed and restarted; then every job is accounted for.

    python -m chaos                                   # 100 000 jobs, 4 workers
    python -m chaos --jobs 2000 --workers 2 --kills 2 --redis-restarts 1

What runs:

* a queue Redis (``--appendonly yes --appendfsync always``) and a ledger Redis that is
  never killed, both private servers on free loopback ports (devserver.RedisServer);
* ``--workers`` processes of ``python -m django jobq_worker`` (settings: chaos.settings);
* an enqueuer thread using the public ``enqueue_many`` in batches; it retries a batch on
  QueueUnavailable, and only ids that a call returned count as acknowledged;
* the fault injector: ``--kills`` SIGKILLs of a random worker, each at a random moment,
  a new worker started at once in its place; ``--redis-restarts`` SIGKILLs of Redis,
  restarted on the same port from its AOF. Faults are spread over the run by progress.

What is checked at the end (exit status 1 if any check fails):

* every acknowledged job is completed: none lost, none left pending, processing,
  claiming or scheduled;
* the completing claim is the job's last claim: the result names the attempt and the
  digest of the token it ran under, and they match the ledger's last execution;
* no claim ran the job twice, and every extra execution was a redelivery the engine
  counted (additional_deliveries);
* jobs that ran more than once are reported with their cause: the worker running them
  was SIGKILLed, or their claim was lost while the worker lived (its log says so; after a
  Redis restart, typically). Anything else is reported as unexplained.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "chaos"
JOB_NAME = "chaos.record"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=100_000, help="jobs to enqueue (default 100000)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--concurrency", type=int, default=4, help="runner threads per worker (default 4)")
    p.add_argument("--kills", type=int, default=20, help="worker SIGKILLs over the run (default 20)")
    p.add_argument("--redis-restarts", type=int, default=2, help="Redis SIGKILL + restarts (default 2)")
    p.add_argument("--seconds", type=float, default=900, help="give up (and fail) after this long (default 900)")
    p.add_argument("--work-ms", type=float, default=2.0, help="each job sleeps up to this long (default 2)")
    p.add_argument("--rate", type=float, default=0, help="enqueue at most this many jobs/s (default: no limit)")
    p.add_argument("--backlog", type=int, default=3000, help="enqueue only while pending is below this")
    p.add_argument("--batch", type=int, default=100, help="jobs per enqueue_many call (default 100)")
    p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    p.add_argument("--workdir", help="keep server files and worker logs here (default: a temporary dir, removed)")
    p.add_argument("--json", help="also write the figures to this file as JSON")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.workers < 1 or args.kills < 0 or args.redis_restarts < 0:
        p.error("--jobs and --workers must be >= 1, --kills and --redis-restarts >= 0")
    return args


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float


@dataclass
class Run:
    args: argparse.Namespace
    rng: random.Random
    workdir: Path
    queue_server: Any = None
    ledger_server: Any = None
    workers: list[WorkerProc] = field(default_factory=list)
    retired: list[WorkerProc] = field(default_factory=list)
    killed_pids: dict[int, float] = field(default_factory=dict)  # pid -> when
    redis_restarts: list[tuple[float, float]] = field(default_factory=list)  # (killed at, answering again at)
    acked: dict[str, int] = field(default_factory=dict)  # job id -> n
    enqueue_retries: int = 0
    enqueue_done: threading.Event = field(default_factory=threading.Event)
    enqueue_error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)

    # ------------------------------------------------------------ processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="chaos.settings",
            CHAOS_REDIS_URL=self.queue_server.url,
            CHAOS_LEDGER_URL=self.ledger_server.url,
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        return env

    def start_worker(self) -> WorkerProc:
        n = len(self.workers) + len(self.retired)
        log_path = self.workdir / f"worker-{n:03d}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "jobq_worker", "--queue", QUEUE, "-v", "0"]
                + ["--concurrency", str(self.args.concurrency)],
                env=self.env(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        w = WorkerProc(proc, log_path, time.time())
        self.workers.append(w)
        return w

    def kill_a_worker(self) -> None:
        victim = self.rng.choice(self.workers)
        time.sleep(self.rng.uniform(0, 0.3))  # a random point of whatever it is doing
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self.killed_pids[victim.proc.pid] = time.time()
        self.workers.remove(victim)
        self.retired.append(victim)
        new = self.start_worker()
        log(f"SIGKILLed worker {victim.proc.pid}; started {new.proc.pid}")

    def restart_redis(self) -> None:
        killed_at = time.time()
        self.queue_server.kill()
        time.sleep(self.rng.uniform(0.1, 1.0))
        self.queue_server.start(timeout=300)  # returns once the AOF is loaded and PING answers
        back_at = time.time()
        self.redis_restarts.append((killed_at, back_at))
        log(f"SIGKILLed Redis; it answered again {back_at - killed_at:.2f} s later (AOF reloaded)")

    # -------------------------------------------------------------- enqueue

    def enqueue_loop(self) -> None:
        from redis.exceptions import RedisError

        from django_jobqueue import QueueUnavailable, enqueue_many, get_queue

        queue = get_queue(QUEUE)
        args = self.args
        n, started = 0, time.monotonic()
        try:
            while n < args.jobs and not self.stop.is_set():
                count = min(args.batch, args.jobs - n)
                payloads = [
                    {"n": i, "work_ms": round(self.rng.uniform(0, args.work_ms), 2)} for i in range(n, n + count)
                ]
                if args.rate:
                    ahead = (n + count) / args.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                while not self.stop.is_set():
                    try:
                        backlog = queue.client.llen(queue.keys.pending)
                    except RedisError:
                        backlog = 0  # Redis is down: the enqueue below will say so
                    if backlog >= args.backlog:
                        time.sleep(0.05)
                        continue
                    try:
                        ids = enqueue_many(JOB_NAME, payloads)
                    except (QueueUnavailable, RedisError, ConnectionError) as exc:
                        # Not acknowledged: some of the batch may be written all the same
                        # (each job whole); they run too, and are counted apart.
                        self.enqueue_retries += 1
                        log(f"enqueue failed ({type(exc).__name__}); retrying the batch")
                        time.sleep(0.2)
                        continue
                    for i, job_id in enumerate(ids):
                        self.acked[job_id] = n + i
                    break
                n += count
        except Exception as exc:  # noqa: BLE001 - reported, and the run fails
            self.enqueue_error = repr(exc)
        finally:
            self.enqueue_done.set()

    # ------------------------------------------------------------ the run

    def depths(self) -> dict[str, int] | None:
        import redis

        client = redis.Redis(port=self.queue_server.port, decode_responses=True, socket_timeout=2)
        try:
            pipe = client.pipeline(transaction=False)
            base = f"queue:{QUEUE}:"
            for name in ("pending", "processing", "claiming"):
                pipe.llen(base + name)
            pipe.zcard(base + "scheduled")
            pipe.hget(base + "stats", "completed")
            pending, processing, claiming, scheduled, completed = pipe.execute()
            return {
                "pending": pending,
                "processing": processing,
                "claiming": claiming,
                "scheduled": scheduled,
                "completed": int(completed or 0),
            }
        except redis.RedisError:
            return None
        finally:
            client.close()

    def fault_plan(self) -> list[tuple[float, str]]:
        """(fraction of jobs completed, fault) pairs, in order: evenly spread over
        the run, each shifted at random by up to a third of the gap, with the Redis
        restarts among the worker kills."""
        a = self.args
        n = a.kills + a.redis_restarts
        restarts = {round((j + 1) * (n + 1) / (a.redis_restarts + 1)) - 1 for j in range(a.redis_restarts)}
        kinds = ["redis" if i in restarts else "kill" for i in range(n)]
        gap = 0.9 / (n + 1)
        return [(0.05 + (i + 1) * gap + self.rng.uniform(-gap / 3, gap / 3), kind) for i, kind in enumerate(kinds)]

    def drive(self) -> bool:
        """Run faults until the queue is drained. False if --seconds ran out first."""
        plan = self.fault_plan()
        deadline = self.started + self.args.seconds
        last_fault, drained_checks, last_report = 0.0, 0, time.time()
        while time.time() < deadline:
            d = self.depths()
            if d is None:
                time.sleep(0.1)
                continue
            progress = d["completed"] / self.args.jobs
            if plan and progress >= plan[0][0] and time.time() - last_fault >= 1.0:
                _at, fault = plan.pop(0)
                if fault == "kill":
                    self.kill_a_worker()
                else:
                    self.restart_redis()
                last_fault = time.time()
                continue
            if time.time() - last_report >= 10:
                last_report = time.time()
                log(f"{d['completed']} completed, {len(self.acked)} acknowledged; depths {d}")
            busy = d["pending"] + d["processing"] + d["claiming"] + d["scheduled"]
            if self.enqueue_done.is_set() and busy == 0:
                drained_checks += 1
                if drained_checks >= 3:
                    if plan:
                        log(f"drained before {len(plan)} planned fault(s); they are skipped")
                    return True
            else:
                drained_checks = 0
            time.sleep(0.2)
        return False

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()


def verify(run: Run, drained: bool) -> dict[str, Any]:
    """Every figure of the report, from the queue's Redis and the ledger."""
    import redis

    from chaos.jobs import EXECUTIONS, RUNS

    q = redis.Redis(port=run.queue_server.port, decode_responses=True)
    led = redis.Redis(port=run.ledger_server.port, decode_responses=True)
    base = f"queue:{QUEUE}:"
    fields = ("status", "attempts", "result", "additional_deliveries", "claim_token")

    # Every job hash, acknowledged or not (a batch that failed may have written some).
    jobs: dict[str, dict[str, str]] = {}
    keys = list(q.scan_iter(match=base + "job:*", count=5000))
    for start in range(0, len(keys), 2000):
        pipe = q.pipeline(transaction=False)
        chunk = keys[start : start + 2000]
        for key in chunk:
            pipe.hmget(key, *fields)
        for key, values in zip(chunk, pipe.execute(), strict=True):
            jobs[key[len(base + "job:") :]] = dict(zip(fields, values, strict=True))

    runs = {k: int(v) for k, v in led.hgetall(RUNS).items()}
    executions: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    for line in led.lrange(EXECUTIONS, 0, -1):
        job_id, attempt, digest, pid, ms = line.split()
        executions[job_id].append((int(attempt), digest, int(pid), int(ms)))

    statuses = Counter((jobs.get(j) or {}).get("status") or "missing" for j in run.acked)
    lost = [j for j in run.acked if (jobs.get(j) or {}).get("status") != "completed"]
    extras = [j for j in jobs if j not in run.acked]
    depth = {
        name: q.llen(base + name) if name != "scheduled" else q.zcard(base + name)
        for name in ("pending", "processing", "claiming", "scheduled")
    }

    # Safety: the completing claim is the last claim, each claim ran at most once,
    # and every extra execution was a redelivery the engine counted.
    wrong_completer, twice_under_one_claim, uncounted = [], [], []
    for job_id, h in jobs.items():
        if h.get("status") != "completed":
            continue
        result = json.loads(h["result"] or "null") or {}
        recs = sorted(executions.get(job_id, []))
        completer = (result.get("attempt"), result.get("token"))
        last_claim = recs[-1][:2] if recs else None
        if completer != last_claim or completer[0] != int(h["attempts"]):
            wrong_completer.append(job_id)
        if len({r[1] for r in recs}) != len(recs):
            twice_under_one_claim.append(job_id)
        if len(recs) - 1 > int(h.get("additional_deliveries") or 0):
            uncounted.append(job_id)

    # Why did jobs run more than once? Look at each execution that did not complete.
    logs = {w.proc.pid: w.log_path for w in run.workers + run.retired}
    log_text: dict[int, str] = {}

    def said_claim_lost(pid: int, job_id: str) -> bool:
        if pid not in log_text:
            path = logs.get(pid)
            log_text[pid] = path.read_text(errors="replace") if path and path.exists() else ""
        return any(
            job_id in line and ("claim lost" in line or "lease lost" in line or "internal error" in line)
            for line in log_text[pid].splitlines()
        )

    # The delay is from the kill (for a killed worker) or from the lost run's start
    # to the start of the next run.
    causes: Counter[str] = Counter()
    delays: dict[str, list[float]] = defaultdict(list)
    unexplained: list[str] = []
    for job_id, recs in executions.items():
        recs = sorted(recs)
        for (_a, _d, pid, ms), nxt in zip(recs, recs[1:], strict=False):
            killed_at = run.killed_pids.get(pid)
            since = ms
            if said_claim_lost(pid, job_id):
                near = any(k * 1000 - 5000 <= ms <= b * 1000 + 60_000 for k, b in run.redis_restarts)
                cause = "claim lost, its worker alive" + (" (around a Redis restart)" if near else "")
            elif killed_at is not None and ms <= killed_at * 1000:
                cause = "its worker SIGKILLed"
                since = int(killed_at * 1000)
            else:
                cause = "unexplained"
                unexplained.append(job_id)
            causes[cause] += 1
            delays[cause].append((nxt[3] - since) / 1000)

    stats = {k: int(v) for k, v in q.hgetall(base + "stats").items()}
    aof = q.config_get("appendfsync").get("appendfsync")
    q.close()
    led.close()
    multi = [j for j, n in runs.items() if n > 1]
    return {
        "jobs": run.args.jobs,
        "workers": run.args.workers,
        "concurrency": run.args.concurrency,
        "seconds": round(time.time() - run.started, 1),
        "drained": drained,
        "appendfsync": aof,
        "worker_kills": len(run.killed_pids),
        "redis_restarts": len(run.redis_restarts),
        "redis_downtime_s": [round(b - k, 2) for k, b in run.redis_restarts],
        "acknowledged": len(run.acked),
        "enqueue_retries": run.enqueue_retries,
        "enqueue_error": run.enqueue_error,
        "unacknowledged_written": len(extras),
        "unacknowledged_completed": sum(1 for j in extras if jobs[j].get("status") == "completed"),
        "statuses": dict(statuses),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "left": depth,
        "executions": sum(runs.values()),
        "jobs_run_more_than_once": len(multi),
        "most_runs_of_one_job": max(runs.values(), default=0),
        "extra_executions_by_cause": dict(causes),
        "redelivery_delay_s": {
            cause: {"median": round(median(v), 2), "max": round(max(v), 2)} for cause, v in delays.items()
        },
        "unexplained_ids": sorted(set(unexplained))[:20],
        "completed_by_a_stale_claim": len(wrong_completer),
        "stale_completer_ids": wrong_completer[:20],
        "claims_that_ran_twice": len(twice_under_one_claim),
        "runs_not_counted_as_redeliveries": len(uncounted),
        "engine_counters": stats,
    }


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; return the failed checks."""
    print()
    print(
        f"chaos: {f['jobs']} jobs, {f['workers']} workers x {f['concurrency']} threads, "
        f"{f['worker_kills']} worker SIGKILLs, {f['redis_restarts']} Redis SIGKILL+restarts "
        f"(appendfsync {f['appendfsync']}, down {f['redis_downtime_s']} s), {f['seconds']} s"
    )
    print(
        f"enqueue:   {f['acknowledged']} acknowledged; {f['enqueue_retries']} batch(es) retried; "
        f"{f['unacknowledged_written']} unacknowledged but written (each whole; "
        f"{f['unacknowledged_completed']} of them completed too)"
    )
    print(
        f"outcome:   {f['statuses'].get('completed', 0)} of {f['acknowledged']} acknowledged jobs completed; "
        f"lost {f['lost']}; left {f['left']}"
    )
    print(
        f"runs:      {f['executions']} executions; {f['jobs_run_more_than_once']} jobs ran more than once "
        f"(at most {f['most_runs_of_one_job']} times)"
    )
    for cause, n in sorted(f["extra_executions_by_cause"].items()):
        d = f["redelivery_delay_s"][cause]
        print(f"           {n} extra run(s): {cause}; run again {d['median']} s later (median), {d['max']} s max")
    print(
        f"safety:    {f['completed_by_a_stale_claim']} completed by a claim that was not the last; "
        f"{f['claims_that_ran_twice']} claims ran twice; "
        f"{f['runs_not_counted_as_redeliveries']} extra runs not counted as redeliveries"
    )
    print(f"counters:  {json.dumps(f['engine_counters'], sort_keys=True)}")
    failed = []
    if f["enqueue_error"]:
        failed.append(f"enqueuer crashed: {f['enqueue_error']}")
    if f["acknowledged"] != f["jobs"]:
        failed.append(f"only {f['acknowledged']} of {f['jobs']} jobs were enqueued")
    if not f["drained"]:
        failed.append("the queue did not drain within --seconds")
    if f["lost"]:
        failed.append(f"{f['lost']} acknowledged jobs not completed: {f['lost_ids']}")
    if any(f["left"].values()):
        failed.append(f"jobs left in the queue: {f['left']}")
    if f["completed_by_a_stale_claim"]:
        failed.append(f"completed by a stale claim: {f['stale_completer_ids']}")
    if f["claims_that_ran_twice"] or f["runs_not_counted_as_redeliveries"]:
        failed.append("a job ran twice without a redelivery the engine counted")
    if f["unexplained_ids"]:
        print(f"note:      extra runs with no kill or lost claim to explain them: {f['unexplained_ids']}")
    print("RESULT:    " + ("FAIL: " + "; ".join(failed) if failed else "PASS: nothing lost"))
    return failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobq-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, random.Random(seed), workdir)

    from django_jobqueue.devserver import RedisServer

    run.queue_server = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
    run.ledger_server = RedisServer().start()
    os.environ.update({k: v for k, v in run.env().items() if k.startswith(("CHAOS_", "DJANGO_"))})
    import django

    django.setup()
    log(f"seed {seed}; queue Redis {run.queue_server.url}, ledger {run.ledger_server.url}; logs in {workdir}")
    enqueuer = threading.Thread(target=run.enqueue_loop, name="enqueuer", daemon=True)
    try:
        for _ in range(args.workers):
            run.start_worker()
        enqueuer.start()
        drained = run.drive()
        run.stop.set()
        enqueuer.join(timeout=30)
        run.stop_workers()
        figures = verify(run, drained)
        figures["seed"] = seed
        failed = report(figures)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2, sort_keys=True))
        return 1 if failed else 0
    finally:
        run.stop.set()
        for w in run.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        for server in (run.queue_server, run.ledger_server):
            server.cleanup()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
