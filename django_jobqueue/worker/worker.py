"""The worker: claim -> run -> finish, with leases, heartbeats and a clean shutdown.

A plain class; ``manage.py jobq_worker`` only parses arguments and calls
``Worker(...).run()``. One process runs ``concurrency`` runner threads, a
heartbeat thread, a lease renewal thread per queue, a maintenance thread (the
sweep), a hooks thread (user hooks), and the main thread, which waits for a
signal and then shuts down in order:

1. stop claiming;
2. keep renewing leases while running jobs finish, up to the grace period;
3. hand jobs still running after the grace period back to pending;
4. remove the worker's record; exit 0.

A second signal exits at once; the leases then bring the jobs back.

The rest is in objects Worker composes, each given what it needs: the running
jobs (running.py), lease renewal (renewal.py), the heartbeat and sweeps
(upkeep.py) and Redis outages (redis_health.py). This module is the runners'
path and the wiring.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .. import tracing
from ..api import get_queue
from ..conf import get_settings
from ..connection import describe, get_client
from ..engine.errortext import cap_error, failure_text
from ..engine.exceptions import JobCancelled
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob, Outcome
from ..events import ListenerThread, start_listener_thread
from ..exceptions import UnknownJobError
from ..registry import JobDefinition, get_definition
from ..schedules import all_schedules, by_queue
from . import joblog
from .async_jobs import AsyncJobs
from .cancels import CancelListener
from .dbconn import close_stale_connections
from .fetcher import MAX_BATCH, Ack, Fetcher
from .hooks import HookRunner
from .job import Job
from .joblog import Failure
from .presence import Presence
from .redis_health import CONNECTION_ERRORS, RedisHealth
from .renewal import LeaseRenewal
from .running import Running, RunningJobs
from .sampling import Sampler
from .scheduler import Scheduler
from .supervisor import POOL_STOP_SIGNAL
from .upkeep import ExhaustedByReclaim, Upkeep

logger = logging.getLogger("django_jobqueue.worker")

# Claims block at most this long so a runner notices a shutdown request quickly.
CLAIM_BLOCK_MS = 1000
# What _run_job returns for an async job it handed to the event loop (async_jobs.py).
ON_THE_LOOP = "on the loop"
# Async jobs running at once in a worker, unless --async-concurrency says otherwise.
ASYNC_CONCURRENCY = 100
# How long async jobs cancelled at the end of the grace period get to end.
ASYNC_CANCEL_WAIT_S = 2.0
# With several queues a runner polls them in priority order, sleeping between
# rounds from MIN to MAX while they are all empty.
POLL_MIN_S, POLL_MAX_S = 0.005, 0.1
# Signals this soon after the first are the same request, not a second one.
SAME_SIGNAL_S = 0.5


@dataclass
class WorkerStats:
    processed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    other: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        return (
            f"{self.processed} jobs run ({self.completed} completed, {self.failed} failed, "
            f"{self.retried} to retry, {self.other} other) in {seconds:.2f} s"
        )


def _call_exhausted_hook(hook: Any, job: Job) -> None:
    try:
        hook(job)
    except Exception:  # noqa: BLE001 - a hook's error is the hook's; the next hook runs
        logger.exception("job %s: on_max_attempts_exhausted raised", job.id)


def default_worker_id() -> str:
    """host.pid.random: containers share hostnames (host networking) and
    pids (each its own pid 1), so the random part keeps the ids apart."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


class Worker:
    """A pool of runner threads serving queues in strict priority order."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        max_jobs: int | None = None,
        grace_seconds: float | None = None,
        worker_id: str | None = None,
        scheduler: bool = True,
        async_concurrency: int | None = None,
    ) -> None:
        settings = get_settings()
        names = list(queues or [settings.default_queue])
        self.queues: list[RedisJobQueue] = [get_queue(name) for name in names]  # raises UnknownQueueError early
        self.queue_settings = [settings.queue(name) for name in names]
        self.concurrency = concurrency or self.queue_settings[0].concurrent_jobs
        # Async handlers run on an event loop of the worker, this many at once (async_jobs.py).
        self.async_jobs = AsyncJobs(async_concurrency or ASYNC_CONCURRENCY)
        self.burst = burst
        self.max_jobs = max_jobs
        self.grace_seconds = settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self.worker_id = worker_id or default_worker_id()
        self.settings = settings
        self.stats = WorkerStats()
        self._stopping = threading.Event()
        # Periodic jobs (not in a burst worker, which only drains); built now
        # so that a wrong schedule stops the worker before it starts.
        self.scheduler: Scheduler | None = None
        if scheduler and not burst:
            defined = all_schedules(settings)
            self.scheduler = Scheduler(
                {name: get_queue(name) for name in settings.queues}, by_queue(defined), self._stopping
            )
        self._stopped = threading.Event()
        self._leaving = threading.Event()  # about to remove the worker's record: no more beats
        self._upkeep_threads: list[threading.Thread] = []  # the sweep's and the heartbeat's threads
        self._stats_lock = threading.Lock()
        self._runners: list[threading.Thread] = []
        self._signals = 0  # stop requests heard (from either source below)
        self._direct_signals = 0  # SIGTERM / SIGINT sent to this process
        self._pool_signals = 0  # POOL_STOP_SIGNAL from the --processes pool
        self._first_signal_at = 0.0
        self._hooks = HookRunner()
        self._events: ListenerThread | None = None
        self.running_jobs = RunningJobs()
        exhausted = ExhaustedByReclaim(self._hooks)
        self._presence = Presence(
            self.worker_id, self.queues, self.concurrency, self.running_jobs.as_json, on_dead_lettered=exhausted.submit
        )
        self._fetcher = Fetcher(
            self.queues,
            self.worker_id,
            block=not burst and len(self.queues) == 1,
            block_ms=CLAIM_BLOCK_MS,
            prefetch=self.concurrency if self.queue_settings[0].prefetch is None else self.queue_settings[0].prefetch,
            # PREFETCH unset: claim larger batches while the jobs are short.
            short_batch=MAX_BATCH if self.queue_settings[0].prefetch is None else 0,
            on_claimed=self._claimed,
            on_acked=self._acked,
            on_lost=self._lost_before_start,
            limit=max_jobs,
        )
        self.redis_health = RedisHealth(
            self._stopping, signalled=lambda: self._signals > 0, on_failure=self._fetcher.redis_failed
        )
        self.renewal = LeaseRenewal(self.running_jobs, self._fetcher, self._stopped)
        self.cancels = CancelListener(
            self.queues, self.running_jobs, self._fetcher, self._stopped, on_dropped=self._cancelled_unstarted
        )
        self.sampler = Sampler(self.worker_id, self.queues, get_client)
        self.upkeep = Upkeep(
            settings,
            self.queues,
            self.worker_id,
            self._presence,
            self._fetcher,
            health=self.redis_health,
            sampler=self.sampler,
            on_dead_lettered=exhausted.submit,
            stopping=self._stopping,
            leaving=self._leaving,
        )

    # ------------------------------------------------------------- lifecycle

    def run(self, *, install_signals: bool = True, pool_child: bool = False) -> int:
        """Serve until stopped (or drained, with burst). Returns the exit code.
        ``pool_child``: this process is one of a ``--processes`` pool's, which
        passes stop requests on as POOL_STOP_SIGNAL."""
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            if pool_child:
                signal.signal(POOL_STOP_SIGNAL, self._on_pool_signal)
        logger.info(
            "worker %s starting: queues %s, concurrency %d (async %d), redis %s%s",
            self.worker_id,
            ", ".join(q.queue_name for q in self.queues),
            self.concurrency,
            self.async_jobs.concurrency,
            describe(self.settings),
            ", burst" if self.burst else "",
        )
        self.redis_health.with_redis(self.upkeep.startup, "registering the worker")
        maintenance = threading.Thread(target=self.upkeep.maintenance_loop, name="jobq-maintenance", daemon=True)
        heartbeat = threading.Thread(target=self.upkeep.heartbeat_loop, name="jobq-heartbeat", daemon=True)
        self._upkeep_threads = [maintenance, heartbeat]
        renewals = [
            threading.Thread(
                target=self.renewal.loop,
                args=(q, qs.visibility_ms / 3000),  # a third of the lease, in seconds
                name=f"jobq-renewal-{q.queue_name}",
                daemon=True,
            )
            for q, qs in zip(self.queues, self.queue_settings, strict=True)
        ]
        for t in [maintenance, heartbeat, *renewals]:
            t.start()
        self.cancels.start()
        if self.scheduler is not None:
            self.redis_health.with_redis(self.scheduler.sync, "writing the schedules")
            self._upkeep_threads.append(self.scheduler.start())
        if self.settings.worker_events_listener:
            self._events = start_listener_thread()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._runner_loop, name=f"jobq-runner-{i}", daemon=True)
            t.start()
            self._runners.append(t)
        try:
            while any(t.is_alive() for t in self._runners) and not self._stopping.is_set():
                self._stopping.wait(0.2)
            # The runners are done (--max-jobs, a burst): the async jobs they
            # handed over run to their end, unless a stop is asked meanwhile.
            while not self._stopping.is_set() and not self.async_jobs.wait_idle(time.monotonic() + 0.2):
                pass
        finally:
            self._shutdown()
        for t in renewals:
            t.join(timeout=2)
        return 0

    def stop(self) -> None:
        """Ask the worker to stop claiming and shut down (thread-safe)."""
        self._stopping.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._direct_signals and now - self._first_signal_at < SAME_SIGNAL_S:
            return  # the same request delivered twice
        if not self._direct_signals:
            self._first_signal_at = now
        self._direct_signals += 1
        self._stop_requests(signal.Signals(signum).name)

    def _on_pool_signal(self, signum: int, frame: Any) -> None:
        self._pool_signals += 1
        self._stop_requests("stop request from the pool")

    def _stop_requests(self, source: str) -> None:
        # A pool's child counts the requests of each source apart: systemd
        # (KillMode=control-group) signals every process of the service, and
        # the pool passes that same request on, as POOL_STOP_SIGNAL.
        requests = max(self._direct_signals, self._pool_signals)
        if requests <= self._signals:
            return  # heard already, from the other source
        self._signals = requests
        if requests > 1:
            logger.warning("second signal: exiting at once; leases will bring running jobs back")
            os._exit(1)
        logger.warning(
            "%s: no new jobs; waiting up to %.0f s for %d running", source, self.grace_seconds, len(self.running_jobs)
        )
        self._stopping.set()

    def _shutdown(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + self.grace_seconds
        for t in self._runners:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        # Async jobs get the same grace period; those still running then are
        # cancelled (CancelledError in the handler) and handed back below.
        if not self.async_jobs.wait_idle(deadline):
            self.async_jobs.cancel_all(timeout=ASYNC_CANCEL_WAIT_S)
        # Idle runners may still sit in a blocking claim; let them come out
        # (they hand back anything they catch) before we hand back the rest,
        # or a job we hand back could be caught by a runner about to die with us.
        idle_deadline = time.monotonic() + CLAIM_BLOCK_MS / 1000 + 2
        for t in self._runners:
            if not self.running_jobs.is_busy(t.ident):
                t.join(timeout=max(0.0, idle_deadline - time.monotonic()))
        self._fetcher.wake_all()
        # Completions the maintenance thread is sending land before anything is
        # handed back (a job handed back with its completion on the way would run again).
        flush = functools.partial(self._fetcher.flush, wait_s=self.settings.socket_timeout)
        self.redis_health.with_redis(flush, "recording completions", attempts=3)
        for queue, claimed in self._fetcher.take_unstarted():
            self._release(queue, claimed)
            self.running_jobs.forget(claimed.id)
        for running in self.running_jobs.snapshot():
            claimed = running.claimed
            if claimed.fields.get("delivery") == "at-most-once":
                # It has started: running it again could run it twice.
                self.redis_health.with_redis(
                    functools.partial(
                        running.queue.fail_outcome,
                        claimed,
                        "lost: the worker shut down while the job ran (at-most-once)",
                        lost=True,
                    ),
                    "marking a job lost",
                    attempts=3,
                )
                joblog.log_event(
                    logging.ERROR,
                    claimed,
                    running.queue.queue_name,
                    "cut off by the shutdown",
                    "lost (at-most-once)",
                    {"outcome": "cut off", "next_action": "lost"},
                )
                continue
            # Started but not finished within the grace period: hand it back so
            # another worker runs it now rather than after the lease runs out.
            outcome = self._release(running.queue, claimed)
            joblog.log_event(
                logging.WARNING,
                claimed,
                running.queue.queue_name,
                "still running at the end of the grace period",
                f"handed back at shutdown ({'not recorded' if outcome is None else outcome.value})",
                {"outcome": "cut off", "next_action": "handed back"},
            )
        # The heartbeat beats until now (the record says "stopping"); a beat
        # landing after the removal would put the record back.
        self._leaving.set()
        for t in self._upkeep_threads:
            t.join(timeout=5)
        self.sampler.flush_last()
        self.redis_health.with_redis(self._presence.deregister, "removing the worker record", attempts=3)
        self._hooks.stop(timeout=self.grace_seconds)
        self.async_jobs.stop()
        if self._events is not None:
            self._events.stop(timeout=2)
        self._stopped.set()

    # --------------------------------------------------------------- runners

    def _runner_loop(self) -> None:
        idle = POLL_MIN_S
        idle_since = time.monotonic()
        eager = True  # just ran a job, or leads the fetching: look for the next at once
        while not self._stopping.is_set():
            if self._fetcher.spent:
                return  # max_jobs: every one is handed to a runner already
            try:
                found, empty = self._fetcher.next_job(eager, idle_since)
            except CONNECTION_ERRORS as exc:
                self.redis_health.down_pause(exc)
                continue
            except RedisError as exc:
                logger.error("claim failed: %s", exc)
                time.sleep(1)
                continue
            except Exception:  # noqa: BLE001 - e.g. a reply that is not UTF-8: never lose a runner
                logger.exception("claim failed")
                time.sleep(1)
                continue
            eager = found is not None or empty
            if found is None:
                if empty and self.burst:
                    if not self.async_jobs.running:
                        return
                    # An async job still running may yet put a job back (a
                    # retry, a requeue): the burst ends once it is done too.
                    self.async_jobs.wait_idle(time.monotonic() + 1.0)
                    continue
                if empty and len(self.queues) > 1:
                    time.sleep(idle)
                    idle = min(POLL_MAX_S, idle * 2)
                continue
            idle = POLL_MIN_S
            self.redis_health.up()
            queue, claimed = found
            if self._stopping.is_set():
                # Caught on the way out: not started, so not this worker's to run.
                self._release(queue, claimed)
                self.running_jobs.forget(claimed.id)
                return
            if time.monotonic() - idle_since > 1.0:
                # Waited a while: a database connection may have gone stale meanwhile.
                close_stale_connections()
            self.running_jobs.runner_busy(threading.get_ident())
            self._process(queue, claimed)
            idle_since = time.monotonic()

    def _acked(self, acked: list[tuple[Ack, Outcome]]) -> None:
        """The batched completions were sent: those jobs are no longer ours."""
        self.running_jobs.forget_many([ack.claimed.id for ack, _ in acked])
        refused = [(ack, outcome) for ack, outcome in acked if outcome is not Outcome.OK]
        if refused:
            with self._stats_lock:
                self.stats.completed -= len(refused)
                self.stats.other += len(refused)
        for ack, outcome in refused:
            joblog.log_event(
                logging.WARNING,
                ack.claimed,
                ack.queue.queue_name,
                "completed",
                f"not recorded: claim lost before its completion was recorded ({outcome.value})",
                {"outcome": "completed", "next_action": "claim lost"},
            )

    def _claimed(self, queue: RedisJobQueue, jobs: list[ClaimedJob]) -> None:
        """Jobs just claimed: running from now on (the cancellation listener
        registers them, applying a request it heard before they arrived)."""
        self.cancels.claimed(queue, jobs)

    def _lost_before_start(self, queue: RedisJobQueue, claimed: ClaimedJob, outcome: Outcome) -> None:
        """A prefetched job not to run: its TTL passed while it waited (it
        ended expired), or Redis no longer knows its claim (a failover lost
        it, or its lease ran out; whoever holds it runs it)."""
        self.running_jobs.forget(claimed.id)
        if outcome is Outcome.EXPIRED:
            happened, next_text, next_action = "not run: its TTL passed before it started", "expired", "expired"
        else:
            happened, next_text, next_action = "not run here", "claim lost before it started", "claim lost"
        fields = {"outcome": "not run", "next_action": next_action}
        joblog.log_event(logging.WARNING, claimed, queue.queue_name, happened, next_text, fields)

    def _cancelled_unstarted(self, queue: RedisJobQueue, claimed: ClaimedJob) -> str:
        """End a claimed job cancelled before its start: it never runs, no
        attempt used. (A runner's, or the cancellation listener's, for a job
        claimed ahead.) If Redis cannot be told, its lease lapses and the
        worker that claims it next finds the request and ends it."""
        try:
            outcome = queue.end_cancelled(claimed, ran=False)
        except Exception as exc:  # noqa: BLE001 - a runner goes on to its next job
            logger.error("job %s: ending it cancelled failed: %s", claimed.id, exc)
            outcome = None
        finally:
            self.running_jobs.forget(claimed.id)
        happened = "not run: cancelled before it started"
        next_text = "cancelled" if outcome is Outcome.OK else "not recorded: claim lost"
        fields = {"outcome": "cancelled", "next_action": "none"}
        joblog.log_event(logging.INFO, claimed, queue.queue_name, happened, next_text, fields)
        return "cancelled"

    def _cancelled_run(self, queue: RedisJobQueue, job: Job) -> str:
        """The handler raised JobCancelled: the job ends cancelled, its attempt
        counted, never retried."""
        job.end_progress()  # the report it kept is written while the claim is ours
        job.outcome = "cancelled"
        # Tried again through a short outage, as a failure is: else the lease
        # lapses and the job is handed out again.
        outcome = self.redis_health.with_redis(
            functools.partial(queue.end_cancelled, job.claimed, ran=True), "ending a cancelled job", attempts=3
        )
        if outcome is None:
            return "not recorded"
        if outcome is not Outcome.OK:
            job.lost_claim = True
            return "claim lost"
        return "cancelled"

    def _release(self, queue: RedisJobQueue, claimed: ClaimedJob) -> Outcome | None:
        """Hand a claimed job back to the head of pending without using an attempt."""
        return self.redis_health.with_redis(
            lambda: queue.requeue(claimed, count_attempt=False, front=True, event="released", counter="releases"),
            "handing a job back",
            attempts=3,
        )

    def _process(self, queue: RedisJobQueue, claimed: ClaimedJob) -> None:
        started = time.monotonic()
        started_ms = time.time() * 1000
        ran: str | Failure = "error"
        try:
            ran = self._run_job(queue, claimed, started, started_ms)
        except BaseException:  # noqa: BLE001 - the worker never dies on a job
            # Its stop is an Event and signals reach the main thread only: what
            # a runner catches here comes from user objects (SystemExit from a
            # __str__, say), and the runner goes on to its next job.
            _log_internal_error(claimed)
        if ran == ON_THE_LOOP:
            self.running_jobs.runner_free(threading.get_ident())  # the job runs on; this runner claims again
            return
        self._finished(queue, claimed, ran, started, started_ms, threading.get_ident())

    def _finished(
        self,
        queue: RedisJobQueue,
        claimed: ClaimedJob,
        ran: str | Failure,
        started: float,
        started_ms: float,
        runner: int | None,
    ) -> None:
        """A job's run is over (``ran``: its outcome): forget it, count it, log it."""
        failure = ran if isinstance(ran, Failure) else None
        outcome = ran.outcome if isinstance(ran, Failure) else ran
        self.running_jobs.finished(claimed.id, runner, completed=outcome == "completed")
        with self._stats_lock:
            self.stats.processed += 1
            if outcome == "completed":
                self.stats.completed += 1
            elif outcome == "failed":
                self.stats.failed += 1
            elif outcome == "retrying":
                self.stats.retried += 1
            else:
                self.stats.other += 1
        seconds = time.monotonic() - started
        self._fetcher.job_ran(seconds)
        self.sampler.ran(queue, claimed, outcome, seconds, started_ms)
        if failure is not None:
            failure.log(claimed, queue.queue_name, started)
            return
        level = (
            logging.INFO
            if outcome in ("completed", "deferred", "requeued", "deleted", "nacked", "cancelled")
            else logging.WARNING
        )
        if logger.isEnabledFor(level):
            # The line of every job, made without logging's search of the call
            # stack for its caller (a good part of a short job's cost).
            joblog.log_finished(level, claimed, queue.queue_name, outcome, seconds * 1000)

    def _run_job(
        self, queue: RedisJobQueue, claimed: ClaimedJob, started: float = 0.0, started_ms: float = 0.0
    ) -> str | Failure:
        """Run a claimed job (or hand it to the event loop: ON_THE_LOOP, which
        then finishes it, timed from ``started`` and ``started_ms``)."""
        if claimed.payload_error:
            return self._dead_letter(queue, claimed, f"payload cannot be decoded: {claimed.payload_error}")
        try:
            definition = get_definition(claimed.name)
        except UnknownJobError as exc:
            # Looked up, never imported: a name written into Redis by hand runs nothing.
            return self._dead_letter(queue, claimed, str(exc))
        if not definition.is_async:
            return self._start_and_run(queue, claimed, definition, started, started_ms)
        # An async job takes a slot on the loop first (the wait may be long),
        # then the checks that decide whether and how it starts (cancelled
        # meanwhile? its only chance begins now?) are made, right before it runs.
        if not self.async_jobs.reserve(self._stopping):
            self._release(queue, claimed)  # stopping while it waited: never started
            return "handed back"
        ran: str | Failure = "error"
        try:
            ran = self._start_and_run(queue, claimed, definition, started, started_ms)
        finally:
            if ran != ON_THE_LOOP:
                self.async_jobs.unreserve()
        return ran

    def _start_and_run(
        self, queue: RedisJobQueue, claimed: ClaimedJob, definition: JobDefinition, started: float, started_ms: float
    ) -> str | Failure:
        job = Job(queue, claimed, definition)
        running = self.running_jobs.get(claimed.id)
        if running is not None:
            running.job = job
            if running.cancel_requested:
                job.cancel_heard()  # heard before the job object existed
        if claimed.fields.get("cancel_requested_ms") or (running is not None and running.cancel_requested):
            # Asked before it started (handed back since, or heard while it
            # waited here): it never starts.
            return self._cancelled_unstarted(queue, claimed)

        okay = definition.preflight.okay_to_run
        if okay is not None:
            try:
                ready = okay(claimed.payload, job)
            except Exception as exc:  # noqa: BLE001
                return self._fail(job, definition, exc)
            if not ready:
                delay_ms = int(definition.preflight.requeue_delay_in_seconds * 1000)
                queue.requeue(claimed, delay_ms=delay_ms, count_attempt=False, event="deferred")
                return "deferred"

        if claimed.needs_start:
            # The job's only chance (at-most-once, or its last attempt) begins
            # now, known to Redis before the handler's first line.
            (began,) = queue.start([claimed])
            if began is Outcome.CANCELLED:
                return self._cancelled_unstarted(queue, claimed)
            if began is not Outcome.OK:
                self._lost_before_start(queue, claimed, began)
                return "expired" if began is Outcome.EXPIRED else "claim lost"
            claimed.needs_start = False
            claimed.attempts += 1
        if definition.is_async:
            run = functools.partial(
                self._run_async, _AsyncRun(queue, claimed, job, definition, running, started, started_ms)
            )
            self.async_jobs.start(run, f"job {claimed.name} {claimed.id}")
            return ON_THE_LOOP
        try:
            with tracing.running(queue.queue_name, claimed, job):
                result = definition.func(claimed.payload, job)
                # Encoded inside the span: a result that cannot be stored
                # (not JSON, too large) fails the job below, and the span says ERROR.
                result_json = queue.encode(result, what="result") if job.outcome is None else ""
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler fails the job, not the worker
            return self._after_raise(queue, claimed, job, definition, exc)
        finally:
            close_stale_connections()
        return self._after_return(queue, claimed, job, definition, running, result_json)

    async def _run_async(self, run: _AsyncRun) -> None:
        """An async job on the loop: its handler awaited; the rest of its run
        (completion or failure, counting, logging) goes to a finishing thread,
        out of reach of the shutdown's cancellation of the handlers."""
        queue, claimed, job = run.queue, run.claimed, run.job
        conclude = functools.partial(self._conclude, run)
        try:
            with tracing.running(queue.queue_name, claimed, job):
                result = await run.definition.func(claimed.payload, job)
                result_json = queue.encode(result, what="result") if job.outcome is None else ""
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if self._stopping.is_set() and task is not None and task.cancelling():
                return  # cut off at the end of the shutdown's grace period: the shutdown hands it back
            # Not the worker's doing (an inner task cancelled): a failure like
            # any other, unless the job's cancellation was asked.
            self.async_jobs.finish_later(
                conclude, JobCancelled(f"job {job.id} was cancelled") if job.cancelled else exc
            )
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler fails the job, not the worker
            self.async_jobs.finish_later(conclude, exc)
        else:
            self.async_jobs.finish_later(conclude, None, result_json)

    def _conclude(self, run: _AsyncRun, raised: BaseException | None, result_json: str = "") -> None:
        """(On a finishing thread.) What follows an async handler's end."""
        ran: str | Failure = "error"
        try:
            if raised is not None:
                ran = self._after_raise(run.queue, run.claimed, run.job, run.definition, raised)
            else:
                ran = self._after_return(run.queue, run.claimed, run.job, run.definition, run.running, result_json)
        except BaseException:  # noqa: BLE001 - the worker never dies on a job
            _log_internal_error(run.claimed)
        finally:
            close_stale_connections()
        self._finished(run.queue, run.claimed, ran, run.started, run.started_ms, None)

    def _after_raise(
        self, queue: RedisJobQueue, claimed: ClaimedJob, job: Job, definition: JobDefinition, exc: BaseException
    ) -> str | Failure:
        """The handler raised: the job fails (or ends as the handler had it end, or cancelled)."""
        if job.outcome is not None:
            raised = Failure.of_exception(exc)
            joblog.log_event(
                logging.WARNING,
                claimed,
                queue.queue_name,
                f"{job.outcome}, then raised {raised.error}",
                "the exception is ignored",
                {"outcome": job.outcome, "exc_type": raised.exc_type, "exc_message": raised.exc_message},
                exc=exc,
                traceback=raised.traceback,
            )
            return job.outcome
        if isinstance(exc, JobCancelled):
            return self._cancelled_run(queue, job)
        return self._fail(job, definition, exc)

    def _after_return(
        self,
        queue: RedisJobQueue,
        claimed: ClaimedJob,
        job: Job,
        definition: JobDefinition,
        running: Running | None,
        result_json: str,
    ) -> str | Failure:
        """The handler returned: the job completes (its completion rides on the
        next claim), unless the handler ended it itself."""
        if job.outcome is not None:
            return self._explicit_outcome(job, definition)
        job.end_progress()  # while the claim is ours: before the completion is queued
        # Sent with the next claim (see fetcher.py); tracked as running until then.
        job.outcome = "completed"
        if running is not None:
            running.finished = True
        self.running_jobs.acking(claimed.id)  # before the ack can be sent
        self._fetcher.ack(Ack(queue, claimed, result_json, claimed.fields.get("keep_result") != "0"))
        return "completed"

    def _explicit_outcome(self, job: Job, definition: JobDefinition) -> str | Failure:
        if job.lost_claim:
            return "claim lost"
        if job.outcome == "failed":
            return self._after_fail(job, definition, Failure.of_error(getattr(job, "fail_error", "failed")))
        return job.outcome or "?"

    def _fail(self, job: Job, definition: JobDefinition, exc: BaseException) -> Failure:
        # Both capped (errortext.py): the traceback part by part, so that a huge
        # message cannot push every frame out of it.
        failure = Failure.of_exception(exc)
        job.failed(failure_text(exc), traceback=failure.traceback)
        return self._after_fail(job, definition, failure)

    def _after_fail(self, job: Job, definition: JobDefinition, failure: Failure) -> Failure:
        result: Outcome | None = getattr(job, "fail_result", None)
        failure.decide(result, claimed=job.claimed, retry_delay_ms=getattr(job, "retry_delay_ms", 0))
        if result is Outcome.FAILED:
            hook = definition.on_max_attempts_exhausted
            if hook is not None and job.max_attempts and job.attempts >= job.max_attempts:
                # On the hooks thread: a slow hook (mail_admins through a slow
                # SMTP server) holds up neither this runner nor its next job.
                self._hooks.submit(functools.partial(_call_exhausted_hook, hook, job))
        return failure

    def _dead_letter(self, queue: RedisJobQueue, claimed: ClaimedJob, error: str) -> Failure:
        error = cap_error(error)  # it quotes what was stored (the log line cuts it shorter still)
        failure = Failure.not_run(error)
        failure.decide(queue.fail_outcome(claimed, error, terminal=True), claimed=claimed, why="it cannot run")
        return failure


@dataclass(frozen=True, slots=True)
class _AsyncRun:
    """An async job handed to the loop, and what finishing it needs."""

    queue: RedisJobQueue
    claimed: ClaimedJob
    job: Job
    definition: JobDefinition
    running: Running | None
    started: float  # time.monotonic() when its run began
    started_ms: float  # time.time() * 1000 then


def _log_internal_error(claimed: ClaimedJob) -> None:
    try:
        logger.exception("job %s: internal error while finishing it", claimed.id)
    except Exception:  # noqa: BLE001, S110 - a logging filter's bug must not end the runner either
        pass
