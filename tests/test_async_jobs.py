"""Async handlers (issue 25, point 2): ``async def`` jobs run on the worker's
event loop, many at once per runner thread, with the guarantees of the sync
ones: completion, failure and retry, lease renewal and ``await job.atouch()``,
cancellation, a graceful shutdown (the grace period, then cancelled and handed
back), reclaimed after kill -9; mixed with sync jobs in one worker; a handler
that blocks the loop is named in the log."""

from __future__ import annotations

import json
import logging
import signal
import threading

import pytest

from django_jobqueue import InvalidJobOptions, cancel, enqueue, get_queue, job
from django_jobqueue.worker import Worker
from tests.helpers.redis_data import job_hash
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain, start_worker, stop
from tests.testapp.jobs import ASYNC_AWAITING, runs


@pytest.fixture(autouse=True)
def _fresh_counts():
    ASYNC_AWAITING.update(now=0, most=0)


class Serving:
    """A worker serving ``queues`` on a thread, until the block ends."""

    def __init__(self, *queues: str, **options) -> None:
        self.worker = Worker(list(queues), scheduler=False, **options)
        self.thread = threading.Thread(target=self.worker.run, kwargs={"install_signals": False}, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_an_async_handler_completes_with_its_result(r):
    job_id = enqueue("async_add", {"a": 2, "b": 3})
    worker = drain()
    assert json.loads(job_hash(r, job_id)["result"]) == {"sum": 5, "async": True}
    assert worker.stats.completed == 1 and runs(r, job_id)


def test_an_async_handler_that_raises_is_retried_then_dead_lettered(r):
    job_id = enqueue("async_boom", {})
    drain()
    fields = job_hash(r, job_id)
    assert fields["status"] == "failed" and fields["attempts"] == "2"
    assert "RuntimeError: async boom" in fields["last_error"]
    assert len(runs(r, job_id)) == 2


def test_many_async_jobs_await_at_once_on_one_runner_bounded_by_the_async_concurrency(r):
    ids = [enqueue("async_wait", {"seconds": 0.2}, queue="fast") for _ in range(12)]
    drain("fast", concurrency=1, async_concurrency=4)
    assert all(job_hash(r, i, "fast")["status"] == "completed" for i in ids)
    assert ASYNC_AWAITING["most"] == 4  # one runner thread, four at once: never more


def test_sync_and_async_jobs_in_one_worker(r):
    ids = [enqueue("add", {"a": 1, "b": n}) for n in range(5)] + [
        enqueue("async_add", {"a": 1, "b": n}) for n in range(5)
    ]
    drain(concurrency=2)
    results = [json.loads(job_hash(r, i)["result"]) for i in ids]
    assert [x["sum"] for x in results] == [1, 2, 3, 4, 5] * 2
    assert [x.get("async", False) for x in results] == [False] * 5 + [True] * 5


def test_an_async_handler_touches_its_lease_and_reports_progress(r):
    job_id = enqueue("async_wait", {"seconds": 0.1, "touch": True, "progress": True}, queue="fast")
    drain("fast")
    fields = job_hash(r, job_id, "fast")
    assert fields["status"] == "completed"
    assert (fields["progress"], fields["progress_message"]) == ("0.5", "half way")


def test_a_running_async_job_is_cancelled_cooperatively(r):
    job_id = enqueue("async_cancellable", {})
    with Serving("jobs"):
        wait_for(lambda: runs(r, job_id, "start"), what="the async job to start")
        cancel(job_id)
        wait_for(lambda: job_hash(r, job_id)["status"] == "cancelled", what="the job to end cancelled")
    assert job_hash(r, job_id)["attempts"] == "1"  # not retried


def test_shutdown_gives_async_jobs_the_grace_period_then_hands_them_back(r):
    short = enqueue("async_wait", {"seconds": 0.3}, queue="fast")
    long = enqueue("async_wait", {"seconds": 60}, queue="fast")
    with Serving("fast", grace_seconds=1.0, async_concurrency=10) as worker:
        wait_for(lambda: len(runs(r, tag="start")) == 2, what="both async jobs to start")
    assert job_hash(r, short, "fast")["status"] == "completed"  # finished within the grace period
    fields = job_hash(r, long, "fast")
    assert fields["status"] == "pending"  # cancelled at its end, and handed back
    assert r.lrange(get_queue("fast").keys.pending, 0, -1) == [long]
    assert worker.async_jobs.running == 0 and ASYNC_AWAITING["now"] == 0


def test_a_killed_workers_async_job_is_reclaimed_and_run_again(r, redis_server):
    job_id = enqueue("async_wait", {"first_run_seconds": 60, "seconds": 0.05}, queue="fast")
    victim = start_worker(redis_server.url, "--queue", "fast", "--worker-id", "victim")
    wait_for(lambda: runs(r, job_id, "start"), what="the async job to start")
    stop(victim, signal.SIGKILL)
    survivor = start_worker(redis_server.url, "--queue", "fast", "--worker-id", "survivor")
    try:
        wait_for(lambda: job_hash(r, job_id, "fast")["status"] == "completed", what="the job to run again")
    finally:
        stop(survivor)
    assert job_hash(r, job_id, "fast")["attempts"] == "2"


def test_a_handler_that_blocks_the_loop_is_named_in_the_log(r, caplog):
    job_id = enqueue("async_blocks", {"seconds": 0.6})
    with caplog.at_level(logging.WARNING, logger="django_jobqueue.worker"):
        drain()
    assert job_hash(r, job_id)["status"] == "completed"
    stalled = [rec.getMessage() for rec in caplog.records if "event loop has been blocked" in rec.getMessage()]
    assert stalled and f"job async_blocks {job_id}" in stalled[0]


# ------------------------------------------------------- what a review broke first


def test_max_jobs_lets_the_async_jobs_it_handed_over_finish(r):
    job_id = enqueue("async_wait", {"seconds": 1.0}, queue="fast")
    worker = Worker(["fast"], max_jobs=1, grace_seconds=0.2, scheduler=False)
    assert worker.run(install_signals=False) == 0
    assert job_hash(r, job_id, "fast")["status"] == "completed"


def test_a_job_waiting_for_an_async_slot_is_neither_started_nor_run_once_cancelled(r):
    """The checks that decide whether a job starts are made once its slot on
    the loop is taken, right before it runs, not while it waits for one."""
    holder = enqueue("async_cancellable", {})
    with Serving("jobs", concurrency=1, async_concurrency=1):
        wait_for(lambda: runs(r, holder, "start"), what="the first job to hold the only slot")
        waiting = enqueue("async_add", {"a": 1, "b": 1}, delivery="at-most-once")
        wait_for(lambda: job_hash(r, waiting)["status"] == "processing", what="the runner to claim it")
        # Its only chance has not begun: a worker killed now would not use it up.
        assert job_hash(r, waiting).get("started", "") == ""
        cancel(waiting)
        cancel(holder)  # the slot frees; the waiting job is checked, and dropped
        wait_for(lambda: job_hash(r, waiting)["status"] == "cancelled", what="it to end cancelled")
    assert runs(r, waiting) == []
    assert job_hash(r, waiting)["attempts"] == "0"


def test_a_handler_that_goes_on_after_its_cancellation_does_not_outlive_the_loop(r):
    job_id = enqueue("async_stubborn", {}, queue="fast")
    with Serving("fast", grace_seconds=0.2) as worker:
        wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    assert job_hash(r, job_id, "fast")["status"] == "pending"  # handed back
    assert not worker.async_jobs._thread.is_alive()


def test_an_inner_task_cancelled_fails_the_job_and_it_is_retried(r):
    job_id = enqueue("async_inner_cancelled", {})
    drain()
    fields = job_hash(r, job_id)
    assert (fields["status"], fields["attempts"]) == ("failed", "3")
    assert "CancelledError" in fields["last_error"]


def test_an_async_preflight_hook_is_refused_at_definition():
    async def okay(payload, job):
        return False

    with pytest.raises(InvalidJobOptions, match="okay_to_run must be a plain function, not async def"):

        @job(name="async_preflight", preflight={"okay_to_run": okay})
        async def handler(payload, job):
            return None


def test_sigterm_gives_a_worker_process_s_async_jobs_the_grace_period_then_hands_them_back(r, redis_server):
    short = enqueue("async_wait", {"seconds": 0.3}, queue="fast")
    long = enqueue("async_wait", {"seconds": 60}, queue="fast")
    worker = start_worker(redis_server.url, "--queue", "fast", "--grace", "1")
    wait_for(lambda: len(runs(r, tag="start")) == 2, what="both async jobs to start")
    code, _out, err = stop(worker, signal.SIGTERM)
    assert code == 0, err
    assert job_hash(r, short, "fast")["status"] == "completed"
    assert job_hash(r, long, "fast")["status"] == "pending"
    assert "handed back at shutdown" in err
