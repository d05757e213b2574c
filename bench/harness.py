"""The benchmark's phases, on one private redis-server.

Phases run one after the other, each for every selected system in turn (so a
burst of load from elsewhere on the machine hits the systems alike), each on
an emptied server (FLUSHALL):

1. enqueue, one call at a time            (child process: bench.client single),
   beside a redis-py PING loop in a child process of its own (bench.client ping)
2. bulk enqueue, then drain with 1 process (bench.client bulk; workers started here)
3. bulk enqueue, Redis memory per pending job, then drain with 2 processes
3b. ours only: the same drain on a queue with a GLOBAL_CONCURRENCY as high as
   the runner threads of both processes (so it never holds a job back): what a
   limited queue's bookkeeping costs per job
3c. ours only: async handlers (each awaits asyncio.sleep(0.1)) drained by one
   worker process, against the ideal of sleep x jobs / --async-concurrency
   (bench.client async-bulk; the worker started here)
3d. ours only: await aenqueue() from many tasks on one event loop, against
   enqueue() from as many threads (bench.client aenqueue, bench.client threads)

Phases 1-3d run in rounds (Plan.single_rounds, Plan.drain_rounds): every
system once per round, so each system's runs are spread over the same minutes;
the best run of each counts.
4. enqueue-to-start latency on an idle worker
5. Redis commands and round trips per job (INFO commandstats, MONITOR)
6. our reclaim sweep with many jobs in flight (ours only)
7. ceilings: redis-py PING and EVALSHA loops, our engine alone, redis-benchmark

Every worker is a subprocess in a session of its own, bound to the private
server, stopped (SIGTERM, then SIGKILL) by process group when its phase ends.
Every wait is bounded by a count and a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.common import ASYNC_FIRST_START, ASYNC_SLEEP_S, COUNTER, GLOBAL_CONCURRENCY_ENV, URL_ENV
from bench.monitor import Monitor, parse
from bench.systems import System

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.005  # how often the harness reads the done-counter while a drain runs
# The steady drain rate is measured between these fractions of the jobs done.
STEADY_FROM, STEADY_TO = 0.1, 0.9
# Our limited drain: this many worker processes, on a queue whose global
# concurrency is well above what they hold at once (their runners' jobs and
# the short jobs they claim ahead, up to 32 each): a limit that never binds,
# so what is measured is its bookkeeping.
LIMITED_PROCESSES = 2
LIMITED_GLOBAL_CONCURRENCY = 100
LIMITED_PHASE = f"bulk enqueue + drain, {LIMITED_PROCESSES} worker processes, global concurrency limit (ours only)"
# Our async drain: one worker process, this many async handlers at once.
ASYNC_CONCURRENCY = 100
ASYNC_DRAIN_PHASE = f"async handlers drain, 1 worker process, --async-concurrency {ASYNC_CONCURRENCY} (ours only)"
# Where the harness counts the async drain's completions: the queue's shared
# counters (engine/keys.py QueueKeys.stats of bench/settings.py's queue).
STATS_KEY = "queue:jobs:stats"
# aenqueue from one event loop against enqueue from threads: this many concurrent callers each.
ASYNC_CALLERS = 50
ASYNC_ENQUEUE_PHASE = "aenqueue from one event loop vs enqueue from threads (ours only)"
# The phases the peers are not run in: features of ours alone.
OURS_ONLY = (LIMITED_PHASE, ASYNC_DRAIN_PHASE, ASYNC_ENQUEUE_PHASE)


@dataclass(frozen=True)
class Plan:
    """How much of everything. The defaults take 15-20 minutes on 2 slow cores."""

    single_n: int = 5000
    drain_n: int = 20000
    drain_cap_s: float = 30.0
    latency_samples: int = 100
    latency_cap_s: float = 15.0
    commands_n: int = 400
    reclaim_sizes: tuple[int, ...] = (1000, 10000, 100000)
    reclaim_repeats: int = 5
    ceiling_n: int = 20000
    redis_benchmark_n: int = 50000
    # Throughput phases are run this many times, every system in turn each
    # round; the best run counts (noise on a shared machine only slows a run
    # down). Every run is kept in results.json and listed in the report.
    single_rounds: int = 3
    drain_rounds: int = 2
    # Ours only: the async drain's jobs (run drain_rounds times), and the jobs
    # each of aenqueue and the threads' enqueue sends (single_rounds times),
    # from this many concurrent callers.
    async_drain_n: int = 1000
    async_enqueue_n: int = 10000
    async_callers: int = ASYNC_CALLERS

    def scaled(self, factor: float) -> Plan:
        def n(v: int, least: int) -> int:
            return max(least, int(v * factor))

        return replace(
            self,
            single_n=n(self.single_n, 20),
            drain_n=n(self.drain_n, 50),
            latency_samples=n(self.latency_samples, 5),
            commands_n=n(self.commands_n, 20),
            reclaim_sizes=tuple(n(s, 100) for s in self.reclaim_sizes),
            ceiling_n=n(self.ceiling_n, 200),
            redis_benchmark_n=n(self.redis_benchmark_n, 1000),
            async_drain_n=n(self.async_drain_n, 100),
            async_enqueue_n=n(self.async_enqueue_n, self.async_callers),
        )


FULL = Plan()
QUICK = Plan(
    single_n=300,
    drain_n=500,
    drain_cap_s=5.0,
    latency_samples=15,
    latency_cap_s=2.0,
    commands_n=100,
    reclaim_sizes=(1000, 10000),
    reclaim_repeats=3,
    ceiling_n=2000,
    redis_benchmark_n=2000,
    single_rounds=1,
    drain_rounds=1,
    async_enqueue_n=1000,
)


@dataclass
class Drain:
    processes: int
    n: int
    done: int = 0
    total_s: float = 0.0  # worker start to last job done
    startup_s: float | None = None  # worker start to first job done
    # jobs/s between the 10 % and the 90 % marks: start-up (processes that
    # begin at different times) and the last stragglers left out
    steady_rate: float | None = None
    capped: bool = False
    error: str | None = None

    @property
    def total_rate(self) -> float | None:
        return self.done / self.total_s if self.total_s > 0 and self.done else None


@dataclass
class AsyncDrain:
    """Ours only: ``n`` async handlers awaiting ``sleep_s`` each, drained by one
    worker process running ``concurrency`` of them at once."""

    n: int
    concurrency: int
    sleep_s: float
    done: int = 0
    # From the first handler's start (wall clock, recorded by the handler) to
    # the poll that saw the last completion counted in the queue's stats.
    drain_s: float | None = None
    total_s: float = 0.0  # worker start to the last completion
    error: str | None = None

    @property
    def ideal_s(self) -> float:
        """Every handler's sleep, ``concurrency`` at once: nothing else costs anything."""
        return self.sleep_s * self.n / self.concurrency

    @property
    def ratio(self) -> float | None:
        return self.drain_s / self.ideal_s if self.drain_s and self.done == self.n else None


@dataclass
class AsyncEnqueue:
    """Ours only: one round of aenqueue() from one loop's tasks against enqueue() from threads."""

    callers: int
    aenqueue_rate: float | None = None  # jobs/s
    threads_rate: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.aenqueue_rate / self.threads_rate if self.aenqueue_rate and self.threads_rate else None


@dataclass
class SystemResult:
    key: str
    enqueue_single: float | None = None  # the best of enqueue_single_runs
    enqueue_single_runs: list[float] = field(default_factory=list)
    enqueue_bulk: list[float] = field(default_factory=list)
    bulk_api: bool = True
    drains: dict[int, Drain] = field(default_factory=dict)  # the best of drain_runs, per process count
    drain_runs: dict[int, list[Drain]] = field(default_factory=dict)
    # Ours only: the 2-process drain on a queue with a global concurrency limit.
    limited_drain: Drain | None = None  # the best of limited_drain_runs
    limited_drain_runs: list[Drain] = field(default_factory=list)
    # Ours only: async handlers drained by one process; aenqueue against threads.
    async_drain: AsyncDrain | None = None  # the fastest of async_drain_runs
    async_drain_runs: list[AsyncDrain] = field(default_factory=list)
    async_enqueue_runs: list[AsyncEnqueue] = field(default_factory=list)
    mem_per_job: float | None = None
    latency_ms: list[float] = field(default_factory=list)
    latency_error: str | None = None
    commands: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, server: Any, plan: Plan, systems: list[System], workdir: Path, log: Callable[[str], None]):
        import redis

        self.server = server
        self.url = server.url
        self.plan = plan
        self.systems = systems
        self.workdir = workdir
        self.log = log
        # One connection, so MONITOR can tell the harness's own commands apart.
        self.r = redis.Redis(port=server.port, decode_responses=True, single_connection_client=True)
        self.env = {
            **os.environ,
            URL_ENV: self.url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONUNBUFFERED": "1",
        }
        self.results = {s.key: SystemResult(s.key) for s in systems}
        # A redis-py PING loop in a child process of its own, run beside the
        # one-at-a-time enqueues in each round: the floor they are held to.
        self.ping_single: list[float] = []
        self._logs = 0

    # ------------------------------------------------------------ plumbing

    def child(
        self, system: System, *args: object, timeout: float = 600, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.client", system.key, *map(str, args)]
        out = subprocess.run(
            cmd, env=env or self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed ({out.returncode}): {out.stderr.strip()[-1500:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def spawn(
        self,
        system: System,
        processes: int,
        *,
        burst: bool,
        phase: str,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> list[subprocess.Popen[bytes]]:
        procs = []
        for argv in system.worker_commands(processes, burst=burst, url=self.url):
            argv = [*argv, *(extra_args or [])]
            self._logs += 1
            logf = open(self.workdir / f"{self._logs:03d}-{system.key}-{phase}.log", "wb")
            try:
                procs.append(
                    subprocess.Popen(
                        argv,
                        env=env or self.env,
                        cwd=REPO,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            finally:
                logf.close()  # the child has its own copy
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
        """SIGTERM each worker's process group (pool children too), then SIGKILL what is left."""
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            # The group outlives its leader if pool children hang on: end them too.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.wait(timeout=5)

    def counter(self) -> int:
        return int(self.r.get(COUNTER) or 0)

    def wait_done(self, n: int, cap_s: float, started: float, procs: list[subprocess.Popen[bytes]], d: Drain) -> int:
        """Poll the done-counter until ``n`` (or the time cap); fill ``d``. Returns the polls made."""
        polls = 0
        first_t = first_c = None
        low = high = None  # (time, count) at the first poll past 10 %, and past 90 %
        while True:
            c = self.counter()
            polls += 1
            now = time.perf_counter()
            if c and first_t is None:
                first_t, first_c = now, c
            if low is None and c >= n * STEADY_FROM:
                low = (now, c)
            if high is None and c >= n * STEADY_TO:
                high = (now, c)
            if c >= n:
                break
            if now - started > cap_s:
                d.capped = True
                break
            if all(p.poll() is not None for p in procs) and c < n:
                # Every worker exited (burst) before the counter got there: give
                # the last INCRs a moment, then report what ran.
                time.sleep(0.2)
                c = self.counter()
                if c < n:
                    d.error = f"workers exited after {c} of {n} jobs (exit codes {[p.returncode for p in procs]})"
                break
            time.sleep(POLL_S)
        d.done = c
        d.total_s = now - started
        if first_t is not None:
            d.startup_s = first_t - started
            if low is not None and high is not None and high[0] > low[0]:
                d.steady_rate = (high[1] - low[1]) / (high[0] - low[0])
            elif now > first_t and c > first_c:  # capped before 90 %: from the first job on
                d.steady_rate = (c - first_c) / (now - first_t)
        return polls

    # --------------------------------------------------------------- phases

    def run(self) -> None:
        p = self.plan
        for name, phase, rounds in [
            ("enqueue, one at a time", self.phase_single, p.single_rounds),
            ("bulk enqueue + drain, 1 worker process", lambda s: self.phase_drain(s, 1), p.drain_rounds),
            ("bulk enqueue + memory + drain, 2 worker processes", lambda s: self.phase_drain(s, 2), p.drain_rounds),
            (LIMITED_PHASE, self.phase_limited_drain, p.drain_rounds),
            (ASYNC_DRAIN_PHASE, self.phase_async_drain, p.drain_rounds),
            (ASYNC_ENQUEUE_PHASE, self.phase_async_enqueue, p.single_rounds),
            ("enqueue-to-start latency", self.phase_latency, 1),
            ("commands per job", self.phase_commands, 1),
        ]:
            # The limited and async phases are ours alone: features the peers are not run with.
            systems = [s for s in self.systems if s.key == "jobqueue"] if name in OURS_ONLY else self.systems
            if not systems:
                continue
            for round_no in range(1, rounds + 1):
                self.log(f"== {name}" + (f" (round {round_no} of {rounds})" if rounds > 1 else ""))
                if phase == self.phase_single:
                    self.phase_ping()
                for system in systems:
                    t0 = time.perf_counter()
                    try:
                        phase(system)
                    except Exception as exc:  # noqa: BLE001 - one system failing must not end the run
                        self.results[system.key].errors.append(f"{name}: {exc}")
                        self.log(f"   {system.label}: ERROR {exc}")
                    else:
                        summary = self._summary(system.key, name)
                        self.log(f"   {system.label}: {summary} ({time.perf_counter() - t0:.1f} s)")

    def _summary(self, key: str, phase: str) -> str:
        r = self.results[key]
        if phase.startswith("enqueue,"):
            return f"{r.enqueue_single_runs[-1]:,.0f} jobs/s"
        if phase == LIMITED_PHASE and r.limited_drain_runs:
            d = r.limited_drain_runs[-1]
            return f"{d.done} jobs in {d.total_s:.2f} s, steady {d.steady_rate or 0:,.0f} jobs/s"
        if phase == ASYNC_DRAIN_PHASE and r.async_drain_runs:
            a = r.async_drain_runs[-1]
            return f"{a.done} jobs in {a.drain_s or 0:.2f} s from the first start (ideal {a.ideal_s:.2f} s)"
        if phase == ASYNC_ENQUEUE_PHASE and r.async_enqueue_runs:
            e = r.async_enqueue_runs[-1]
            return f"aenqueue {e.aenqueue_rate or 0:,.0f} jobs/s, {e.callers} threads {e.threads_rate or 0:,.0f} jobs/s"
        if "drain" in phase:
            d = r.drain_runs[max(r.drain_runs)][-1]
            extra = " (time cap)" if d.capped else ""
            return f"{d.done} jobs in {d.total_s:.2f} s, steady {d.steady_rate or 0:,.0f} jobs/s{extra}"
        if phase.startswith("enqueue-to-start"):
            if not r.latency_ms:
                return r.latency_error or "no samples"
            return f"p50 {percentile(r.latency_ms, 50):.2f} ms over {len(r.latency_ms)} samples"
        if phase.startswith("commands"):
            c = r.commands
            return f"{c.get('commands_per_job', 0):.1f} commands, {c.get('round_trips_per_job', 0):.1f} round trips/job"
        return ""

    def phase_ping(self) -> None:
        self.r.flushall()
        cmd = [sys.executable, "-m", "bench.client", "ping", "single", str(self.plan.single_n)]
        out = subprocess.run(cmd, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        self.ping_single.append(res["n"] / res["seconds"])
        self.log(f"   redis-py PING loop: {self.ping_single[-1]:,.0f} calls/s")

    def phase_single(self, system: System) -> None:
        self.r.flushall()
        res = self.child(system, "single", self.plan.single_n)
        result = self.results[system.key]
        result.enqueue_single_runs.append(res["n"] / res["seconds"])
        result.enqueue_single = max(result.enqueue_single_runs)

    def phase_drain(self, system: System, processes: int, *, global_concurrency: int = 0) -> None:
        """Bulk enqueue, then drain with ``processes`` burst workers; with a
        ``global_concurrency``, on a queue limited to it (ours only), kept apart."""
        result = self.results[system.key]
        n = self.plan.drain_n
        # The settings (bench/settings.py) read the limit: the enqueuer and the
        # workers run with the same queue settings, as in a real deployment.
        env = {**self.env, GLOBAL_CONCURRENCY_ENV: str(global_concurrency)} if global_concurrency else None
        self.r.flushall()
        mem0 = self.r.info("memory")["used_memory"]
        res = self.child(system, "bulk", n, env=env)
        if processes == 2 and not global_concurrency:
            # After one round already ran, so one-off costs (script cache, buffers) are paid.
            result.mem_per_job = (self.r.info("memory")["used_memory"] - mem0) / n
        result.bulk_api = res["bulk"]
        if res["bulk"] and not global_concurrency:
            # The peers have no limited drain: ours gets no extra try at the bulk row.
            result.enqueue_bulk.append(n / res["seconds"])
        d = Drain(processes, n)
        started = time.perf_counter()
        phase = f"drain{processes}" + ("-limited" if global_concurrency else "")
        procs = self.spawn(system, processes, burst=True, phase=phase, env=env)
        try:
            self.wait_done(n, self.plan.drain_cap_s, started, procs, d)
        finally:
            self.stop(procs)
        if global_concurrency:
            result.limited_drain_runs.append(d)
            result.limited_drain = max(result.limited_drain_runs, key=_best_drain)
        else:
            runs = result.drain_runs.setdefault(processes, [])
            runs.append(d)
            result.drains[processes] = max(runs, key=_best_drain)
        if d.error:
            raise RuntimeError(d.error)

    def phase_limited_drain(self, system: System) -> None:
        """Our 2-process drain on a queue limited to as many jobs at once as
        both processes have runner threads: the limit never holds a job back,
        so the difference from the unlimited drain is what the limit's
        bookkeeping costs (no claiming ahead, a mark per claimed job, a wake
        token per completion)."""
        self.phase_drain(system, LIMITED_PROCESSES, global_concurrency=LIMITED_GLOBAL_CONCURRENCY)

    def phase_async_drain(self, system: System) -> None:
        """Ours only: bulk enqueue jobs whose async handler awaits
        asyncio.sleep(ASYNC_SLEEP_S), then drain them with one burst worker
        process running ASYNC_CONCURRENCY at once. Timed from the first
        handler's start to the last completion the queue's stats count (so
        the worker's start-up is left out, and the completions' writes are in)."""
        result = self.results[system.key]
        d = AsyncDrain(self.plan.async_drain_n, ASYNC_CONCURRENCY, ASYNC_SLEEP_S)
        result.async_drain_runs.append(d)
        self.r.flushall()
        self.child(system, "async-bulk", d.n)
        started = time.perf_counter()
        # Our worker command as the other drains run it, with the async handlers' bound said outright.
        procs = self.spawn(
            system, 1, burst=True, phase="drain-async", extra_args=["--async-concurrency", str(d.concurrency)]
        )
        try:
            while True:
                done = int(self.r.hget(STATS_KEY, "completed") or 0)
                now, wall = time.perf_counter(), time.time()
                if done >= d.n or now - started > self.plan.drain_cap_s:
                    break
                if procs[0].poll() is not None:
                    time.sleep(0.2)  # a last completion's write may be on its way
                    done = int(self.r.hget(STATS_KEY, "completed") or 0)
                    if done < d.n:
                        d.error = f"the worker exited after {done} of {d.n} jobs (exit code {procs[0].returncode})"
                    break
                time.sleep(POLL_S)
        finally:
            self.stop(procs)
        d.done, d.total_s = done, now - started
        first = self.r.get(ASYNC_FIRST_START)
        if first is not None and done:
            d.drain_s = wall - float(first)
        if done < d.n and not d.error:
            d.error = f"{done} of {d.n} jobs done within the time cap"
        finished = [run for run in result.async_drain_runs if run.ratio is not None]
        result.async_drain = min(finished, key=lambda run: run.ratio or 0.0) if finished else d
        if d.error:
            raise RuntimeError(d.error)

    def phase_async_enqueue(self, system: System) -> None:
        """Ours only: the same jobs sent one per call by ``async_callers``
        concurrent callers: tasks gathered on one event loop awaiting
        aenqueue(), then as many threads calling enqueue(), each in a child
        process of its own."""
        p = self.plan
        run = AsyncEnqueue(p.async_callers)
        self.results[system.key].async_enqueue_runs.append(run)
        self.r.flushall()
        res = self.child(system, "aenqueue", p.async_enqueue_n, p.async_callers)
        run.aenqueue_rate = res["n"] / res["seconds"]
        self.r.flushall()
        res = self.child(system, "threads", p.async_enqueue_n, p.async_callers)
        run.threads_rate = res["n"] / res["seconds"]

    def phase_latency(self, system: System) -> None:
        result = self.results[system.key]
        self.r.flushall()
        procs = self.spawn(system, 1, burst=False, phase="latency")
        try:
            res = self.child(system, "latency", self.plan.latency_samples, self.plan.latency_cap_s, timeout=180)
        finally:
            self.stop(procs)
        result.latency_ms = [s * 1000 for s in res.get("samples", [])]
        result.latency_error = res.get("error")
        if result.latency_error:
            raise RuntimeError(result.latency_error)

    def phase_commands(self, system: System) -> None:
        """Enqueue N one at a time, drain them with one worker process, under
        MONITOR and with INFO commandstats read before and after."""
        n = self.plan.commands_n
        self.r.flushall()
        me = self.r.client_info()["addr"]
        before = self.r.info("commandstats")
        mon = Monitor(self.server.port)
        procs: list[subprocess.Popen[bytes]] = []
        d = Drain(1, n)
        marker = b""
        try:
            self.child(system, "single", n)
            started = time.perf_counter()
            procs = self.spawn(system, 1, burst=True, phase="commands")
            polls = self.wait_done(n, self.plan.drain_cap_s, started, procs, d)
            after = self.r.info("commandstats")
            marker = f"bench-monitor-end-{time.monotonic_ns()}".encode()
            self.r.echo(marker)
        finally:
            lines = mon.stop(marker)
            self.stop(procs)
        counts = parse(lines, ignore_addrs={me})
        # INFO commandstats counts script-run commands too; leave out the
        # harness's own (its GET polls, INFO, ECHO) and MONITOR itself.
        calls: dict[str, int] = {}
        for key, stat in after.items():
            name = key.removeprefix("cmdstat_")
            calls[name] = stat["calls"] - before.get(key, {}).get("calls", 0)
        calls["get"] = calls.get("get", 0) - polls
        for own in ("info", "echo", "monitor", "flushall", "client|info"):
            calls.pop(own, None)
        jobs = d.done or n
        result = self.results[system.key]
        result.commands = {
            "n": n,
            "done": d.done,
            "commands_per_job": sum(v for v in calls.values() if v > 0) / jobs,
            "round_trips_per_job": counts.round_trips / jobs,
            "client_commands_per_job": counts.client_commands / jobs,
            "script_commands_per_job": counts.script_commands / jobs,
            "client_by_command": {k: v / jobs for k, v in counts.by_command.most_common()},
            "in_scripts_by_command": {k: v / jobs for k, v in counts.in_scripts.most_common()},
            "commandstats_by_command": {k: v / jobs for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0},
            "capped": d.capped,
        }
        if d.done < n and not d.capped:
            raise RuntimeError(f"only {d.done} of {n} jobs ran under MONITOR: {d.error}")

    # ---------------------------------------------------- ours only, and ceilings

    def reclaim(self) -> list[dict[str, Any]]:
        from bench.reclaim import measure

        self.r.flushall()
        out = measure(self.r, self.plan.reclaim_sizes, self.plan.reclaim_repeats, self.log)
        self.r.flushall()
        return out

    def ceilings(self, with_engine: bool) -> dict[str, Any]:
        from bench.ceilings import engine_loops, loops, redis_benchmark

        self.r.flushall()
        out: dict[str, Any] = {"loops": loops(self.server.port, self.plan.ceiling_n)}
        if with_engine:
            out["engine"] = engine_loops(self.server.port, self.plan.ceiling_n)
        self.r.flushall()
        binary = shutil.which("redis-benchmark")
        out["redis_benchmark"] = (
            redis_benchmark(binary, self.server.port, self.plan.redis_benchmark_n) if binary else []
        )
        self.r.flushall()
        return out


def _best_drain(d: Drain) -> tuple[bool, float]:
    """The sort key of the drain that counts: one without error, then the best steady rate."""
    return (not d.error, d.steady_rate or 0.0)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def as_json(results: dict[str, SystemResult]) -> dict[str, Any]:
    out = {}
    for key, r in results.items():
        data = asdict(r)
        data["drains"] = {
            str(p): {**asdict(d), "total_rate": d.total_rate} for p, d in r.drains.items()
        }  # fmt: skip
        data["drain_runs"] = {str(p): [{**asdict(d), "total_rate": d.total_rate} for d in runs]
                              for p, runs in r.drain_runs.items()}  # fmt: skip
        data["limited_drain_runs"] = [{**asdict(d), "total_rate": d.total_rate} for d in r.limited_drain_runs]
        data["async_drain_runs"] = [{**asdict(d), "ideal_s": d.ideal_s, "ratio": d.ratio} for d in r.async_drain_runs]
        data["async_enqueue_runs"] = [{**asdict(e), "ratio": e.ratio} for e in r.async_enqueue_runs]
        out[key] = data
    return out
