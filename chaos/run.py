"""The chaos run: jobs of mixed kinds enqueued and run by real worker processes while
workers are SIGKILLed and Redis itself is SIGKILLed and restarted; then every job is
accounted for, per kind.

    python -m chaos                                   # 100 000 jobs, 4 workers
    python -m chaos --jobs 2000 --workers 3 --kills 2 --redis-restarts 1

What runs:

* a queue Redis (``--appendonly yes --appendfsync always``), a private server on a
  free loopback port (devserver.RedisServer), and the ledger: a file per worker
  process in which each run of a job records itself (chaos/jobs.py);
* ``--workers`` processes of ``python -m django jobq_worker`` (settings: chaos.settings);
  ``--pid-namespaces`` of them (2 by default) each in a PID namespace of its own
  (``unshare --pid --fork --kill-child``): pid 1 on the same hostname, as containers
  with host networking look. This needs root and unshare; otherwise they are plain
  workers and the reason is printed;
* an enqueuer thread using the public ``enqueue_many`` in batches of interleaved kinds
  (``--mix``, see chaos/jobs.py): ordinary at-least-once jobs, at-most-once jobs, jobs
  with max_attempts=1, jobs with a TTL of ``--ttl`` seconds, and jobs that fail on
  purpose whose on_max_attempts_exhausted hook sleeps 2 x WORKER_TIMEOUT_SECONDS. It
  retries a call on QueueUnavailable; only ids that a call returned count as
  acknowledged;
* the fault injector: ``--kills`` SIGKILLs of a random worker, each at a random moment,
  a new worker started at once in its place; ``--redis-restarts`` SIGKILLs of Redis,
  restarted on the same port from its AOF. Faults are spread over the run by progress.

What is checked at the end, per kind (chaos/verify.py, chaos/report.py; exit status 1
if any fails):
no job lost unrun, no at-most-once job run twice, no extra run without a kill or a lost
claim to explain it, no job left in the queue, every job ended in a state its kind
allows (and a failed or lost one only after a run a fault cut off), the engine's
counters equal the jobs' end states (each ended once), no live worker taken for lost;
and, as before the mix, the completing claim is each completed job's last claim and
every extra run is a redelivery the engine counted.
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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.jobs import KINDS
from chaos.workers import WorkerProc, namespaces_unavailable, tail_records

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "chaos"
# Mostly ordinary jobs; each other kind enough to meet the faults. A slow-hook job
# holds a runner thread for its hook's 6 s, so there are few of them.
DEFAULT_MIX = "ordinary=92,at-most-once=2,max-attempts-1=2,ttl=4,slow-hook=0.05"
# --aim: how long a kill waits for a job of its kind to start, and how recent a start counts.
AIM_WAIT_S, AIM_FRESH_MS = 1.0, 5


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        try:
            mix[kind] = float(weight)
        except ValueError:
            raise ValueError(f"{kind}: weight {weight!r} is not a number") from None
        if mix[kind] < 0:
            raise ValueError(f"{kind}: weight must be >= 0")
    if not sum(mix.values()):
        raise ValueError("the weights add up to 0")
    return mix


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=100_000, help="jobs to enqueue (default 100000)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--concurrency", type=int, default=4, help="runner threads per worker (default 4)")
    p.add_argument("--kills", type=int, default=20, help="worker SIGKILLs over the run (default 20)")
    p.add_argument("--redis-restarts", type=int, default=2, help="Redis SIGKILL + restarts (default 2)")
    p.add_argument(
        "--aim",
        action="store_true",
        help="kill workers mid-run: each kill waits (up to 1 s) for a job of the next kind in turn to start, "
        "and kills the worker running it (default: a random worker at a random moment)",
    )
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"kinds of jobs and their weights (default {DEFAULT_MIX})")
    p.add_argument("--ttl", default="1-3", help="TTL of the ttl jobs, seconds: LOW-HIGH at random (default 1-3)")
    p.add_argument(
        "--pid-namespaces", type=int, default=2, help="workers each in a PID namespace of its own (default 2)"
    )
    p.add_argument("--seconds", type=float, default=900, help="give up (and fail) after this long (default 900)")
    p.add_argument("--work-ms", type=float, default=2.0, help="each job sleeps up to this long (default 2)")
    p.add_argument("--rate", type=float, default=0, help="enqueue at most this many jobs/s (default: no limit)")
    p.add_argument("--backlog", type=int, default=3000, help="enqueue only while pending is below this")
    p.add_argument("--batch", type=int, default=100, help="jobs per batch of enqueue_many calls (default 100)")
    p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    p.add_argument("--workdir", help="keep server files and worker logs here (default: a temporary dir, removed)")
    p.add_argument("--json", help="also write the figures to this file as JSON")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.workers < 1 or args.kills < 0 or args.redis_restarts < 0 or args.pid_namespaces < 0:
        p.error("--jobs and --workers must be >= 1, --kills, --redis-restarts and --pid-namespaces >= 0")
    try:
        args.mix = parse_mix(args.mix)
        low, _, high = args.ttl.partition("-")
        args.ttl = (float(low), float(high or low))
    except ValueError as exc:
        p.error(str(exc))
    if not 0 < args.ttl[0] <= args.ttl[1]:
        p.error("--ttl must be LOW-HIGH with 0 < LOW <= HIGH")
    return args


def plan_kinds(jobs: int, mix: dict[str, float], rng: random.Random) -> list[str]:
    """The kind of each job, in enqueue order: exact shares of the mix, shuffled."""
    total = sum(mix.values())
    counts = {kind: int(jobs * w / total) for kind, w in mix.items() if kind != "ordinary"}
    counts["ordinary"] = jobs - sum(counts.values())
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    return kinds


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Run:
    args: argparse.Namespace
    rng: random.Random
    workdir: Path
    kinds: list[str] = field(default_factory=list)
    namespaces: int = 0  # workers kept in PID namespaces of their own
    namespaces_skipped: str | None = None
    queue_server: Any = None
    workers: list[WorkerProc] = field(default_factory=list)
    retired: list[WorkerProc] = field(default_factory=list)
    killed: dict[str, float] = field(default_factory=dict)  # worker tag -> when SIGKILLed
    exited: list[str] = field(default_factory=list)  # workers that exited by themselves
    registrations: dict[str, tuple[str, float]] = field(default_factory=dict)  # worker id -> (pid, first seen)
    redis_restarts: list[tuple[float, float]] = field(default_factory=list)  # (killed at, answering again at)
    acked: dict[str, tuple[int, str]] = field(default_factory=dict)  # job id -> (n, kind)
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
            CHAOS_LEDGER_DIR=str(self.ledger_dir),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        return env

    @property
    def ledger_dir(self) -> Path:
        return self.workdir / "ledger"

    def all_workers(self) -> list[WorkerProc]:
        return self.workers + self.retired

    def start_worker(self, namespaced: bool = False) -> WorkerProc:
        n = len(self.all_workers())
        tag = f"w{n:03d}" + ("ns" if namespaced else "")
        log_path = self.workdir / f"worker-{tag}.log"
        command = [sys.executable, "-m", "django", "jobq_worker", "--queue", QUEUE, "-v", "0"]
        command += ["--concurrency", str(self.args.concurrency)]
        if namespaced:
            command = ["unshare", "--pid", "--fork", "--kill-child", *command]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                command, env={**self.env(), "CHAOS_WORKER": tag}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        w = WorkerProc(proc, log_path, time.time(), tag, namespaced)
        self.workers.append(w)
        return w

    def watch_registry(self) -> None:
        """Note every worker id that registers, with its pid and when it was first
        seen: a worker taken for lost is named by its id (see worker_tags)."""
        import redis

        from django_jobqueue.conf import get_settings
        from django_jobqueue.engine.keys import GlobalKeys

        keys = GlobalKeys(get_settings().key_prefix)
        client = redis.Redis(port=self.queue_server.port, decode_responses=True, socket_timeout=2)
        try:
            while not self.stop.is_set():
                try:
                    for wid in map(str, client.zrange(keys.workers, 0, -1)):
                        if wid not in self.registrations:
                            pid = client.hget(keys.worker(wid), "pid")
                            if pid:
                                self.registrations[wid] = (str(pid), time.time())
                except redis.RedisError:
                    pass
                self.stop.wait(0.1)
        finally:
            client.close()

    def worker_tags(self, ledger_ids: dict[str, set[str]]) -> dict[str, str]:
        """Worker id -> tag: from the ledger (the id each run was claimed under),
        else by pid; the ids of workers in PID namespaces (all pid 1) that ran
        nothing go, in the order they registered, to those workers in the order
        they started."""
        tags = {wid: next(iter(t)) for wid, t in ledger_ids.items() if len(t) == 1}
        by_pid = {str(w.proc.pid): w.tag for w in self.all_workers() if not w.namespaced}
        for wid, (pid, _seen) in self.registrations.items():
            if wid not in tags and pid in by_pid:
                tags[wid] = by_pid[pid]
        known = set(tags.values())
        ns_left = [w.tag for w in sorted(self.all_workers(), key=lambda w: w.started) if w.namespaced]
        ns_left = [t for t in ns_left if t not in known]
        ns_ids = sorted(
            (seen, wid) for wid, (pid, seen) in self.registrations.items() if pid == "1" and wid not in tags
        )
        for (_seen, wid), tag in zip(ns_ids, ns_left, strict=False):
            tags[wid] = tag
        return tags

    def aim(self) -> tuple[WorkerProc, str] | None:
        """The worker that has just started a job of the next kind in turn (any
        kind after AIM_WAIT_S / 2; None after AIM_WAIT_S): killed now, it dies in
        that job's run."""
        kinds = [kind for kind, weight in self.args.mix.items() if weight]
        want = kinds[len(self.killed) % len(kinds)]
        started = time.time()
        while time.time() - started < AIM_WAIT_S:
            now_ms = time.time() * 1000
            for w in self.workers:
                for fields in reversed(tail_records(self.ledger_dir / f"ledger-{w.tag}.log")):
                    if fields[0] != "x":
                        continue
                    _x, job_id, _attempt, _digest, _tag, _pid, ms, _wid = fields
                    if now_ms - int(ms) > AIM_FRESH_MS:
                        break
                    kind = self.acked.get(job_id, (0, "?"))[1]
                    if kind == want or time.time() - started > AIM_WAIT_S / 2:
                        return w, f"mid-run of {kind} job {job_id}"
            time.sleep(0.002)
        return None

    def kill_a_worker(self) -> None:
        aimed = self.aim() if self.args.aim else None
        if aimed is None:
            victim, what = self.rng.choice(self.workers), "at a random moment"
            time.sleep(self.rng.uniform(0, 0.3))  # a random point of whatever it is doing
        else:
            victim, what = aimed
        victim.send(signal.SIGKILL)
        victim.proc.wait()
        self.killed[victim.tag] = time.time()
        self.workers.remove(victim)
        self.retired.append(victim)
        new = self.start_worker(victim.namespaced)
        log(f"SIGKILLed worker {victim.tag} (pid {victim.proc.pid}) {what}; started {new.tag} (pid {new.proc.pid})")

    def replace_exited(self) -> None:
        """A worker that exited by itself is a failure; one takes its place so the run can end."""
        for w in list(self.workers):
            code = w.proc.poll()
            if code is None:
                continue
            self.exited.append(f"{w.tag} exited with status {code}")
            log(f"worker {w.tag} (pid {w.proc.pid}) exited by itself with status {code}; see {w.log_path}")
            self.workers.remove(w)
            self.retired.append(w)
            self.start_worker(w.namespaced)

    def restart_redis(self) -> None:
        killed_at = time.time()
        self.queue_server.kill()
        time.sleep(self.rng.uniform(0.1, 1.0))
        self.queue_server.start(timeout=300)  # returns once the AOF is loaded and PING answers
        back_at = time.time()
        self.redis_restarts.append((killed_at, back_at))
        log(f"SIGKILLed Redis; it answered again {back_at - killed_at:.2f} s later (AOF reloaded)")

    # -------------------------------------------------------------- enqueue

    def enqueue_call(self, kind: str, payloads: list[dict[str, Any]]) -> list[str]:
        from django_jobqueue import enqueue_many

        options: dict[str, Any] = {}
        if kind == "max-attempts-1":
            options["max_attempts"] = 1
        elif kind == "ttl":
            options["ttl"] = round(self.rng.uniform(*self.args.ttl), 2)
        return enqueue_many(KINDS[kind], payloads, **options)

    def enqueue_loop(self) -> None:
        from redis.exceptions import RedisError

        from django_jobqueue import QueueUnavailable, get_queue

        queue = get_queue(QUEUE)
        args = self.args
        n, started = 0, time.monotonic()
        try:
            while n < args.jobs and not self.stop.is_set():
                count = min(args.batch, args.jobs - n)
                # The batch's jobs by kind: one enqueue_many per kind (options are
                # per call), in the order the kinds first appear in the batch.
                groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for i in range(n, n + count):
                    groups[self.kinds[i]].append({"n": i, "work_ms": round(self.rng.uniform(0, args.work_ms), 2)})
                if args.rate:
                    ahead = (n + count) / args.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                for kind, payloads in groups.items():
                    while not self.stop.is_set():
                        try:
                            backlog = queue.client.llen(queue.keys.pending)
                        except RedisError:
                            backlog = 0  # Redis is down: the enqueue below will say so
                        if backlog >= args.backlog:
                            time.sleep(0.05)
                            continue
                        try:
                            ids = self.enqueue_call(kind, payloads)
                        except (QueueUnavailable, RedisError, ConnectionError) as exc:
                            # Not acknowledged: some of the call's jobs may be written all
                            # the same (each whole); they run too, and are counted apart.
                            self.enqueue_retries += 1
                            log(f"enqueue failed ({type(exc).__name__}); retrying the call")
                            time.sleep(0.2)
                            continue
                        for job_id, payload in zip(ids, payloads, strict=True):
                            self.acked[job_id] = (payload["n"], kind)
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
            pipe.hmget(base + "stats", "completed", "failed", "lost", "expired")
            pending, processing, claiming, scheduled, ended = pipe.execute()
            return {
                "pending": pending,
                "processing": processing,
                "claiming": claiming,
                "scheduled": scheduled,
                "ended": sum(int(x or 0) for x in ended),
            }
        except redis.RedisError:
            return None
        finally:
            client.close()

    def fault_plan(self) -> list[tuple[float, str]]:
        """(fraction of jobs ended, fault) pairs, in order: evenly spread over
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
            self.replace_exited()
            d = self.depths()
            if d is None:
                time.sleep(0.1)
                continue
            progress = d["ended"] / self.args.jobs
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
                log(f"{d['ended']} ended, {len(self.acked)} acknowledged; depths {d}")
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

    def wait_for_hooks(self) -> None:
        """Slow hooks outlive their jobs (a job is failed before its hook runs): let
        those under way finish, so the figures show them whole."""
        from chaos.verify import read_records
        from django_jobqueue.conf import get_settings

        deadline = time.time() + 4 * get_settings().worker_timeout_seconds + 5
        quiet_since, seen = time.time(), -1
        while time.time() < deadline:
            hooks = [r for r in read_records(self.ledger_dir) if r[0] == "h"]
            starts = sum(1 for r in hooks if r[2] == "start")
            if len(hooks) != seen:
                seen, quiet_since = len(hooks), time.time()
            if starts * 2 == len(hooks) and time.time() - quiet_since >= 1.0:
                return
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.send(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.send(signal.SIGKILL)
                w.proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobq-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, random.Random(seed), workdir)
    run.kinds = plan_kinds(args.jobs, args.mix, run.rng)
    run.namespaces_skipped = namespaces_unavailable() if args.pid_namespaces else "--pid-namespaces 0"
    run.namespaces = 0 if run.namespaces_skipped else min(args.pid_namespaces, args.workers)

    from chaos.report import report
    from chaos.verify import verify
    from django_jobqueue.devserver import RedisServer

    run.queue_server = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
    run.ledger_dir.mkdir(exist_ok=True)
    os.environ.update({k: v for k, v in run.env().items() if k.startswith(("CHAOS_", "DJANGO_"))})
    import django

    django.setup()
    log(f"seed {seed}; queue Redis {run.queue_server.url}; ledger and logs in {workdir}")
    if run.namespaces_skipped:
        log(f"workers in PID namespaces of their own skipped: {run.namespaces_skipped}")
    enqueuer = threading.Thread(target=run.enqueue_loop, name="enqueuer", daemon=True)
    watcher = threading.Thread(target=run.watch_registry, name="registry", daemon=True)
    try:
        watcher.start()
        for i in range(args.workers):
            run.start_worker(namespaced=i >= args.workers - run.namespaces)
        enqueuer.start()
        drained = run.drive()
        if drained:
            run.wait_for_hooks()
        run.stop.set()
        enqueuer.join(timeout=30)
        watcher.join(timeout=5)
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
                w.send(signal.SIGKILL)
                w.proc.wait()
        run.queue_server.cleanup()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
