"""Jobs used by the tests. Each records what it did in Redis, so tests can see
what ran in this process and in worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

from django_jobqueue import job
from django_jobqueue.connection import get_client

RUNS = "test:runs"  # list of "<job id>:<pid>:<tag>", one entry per event


def record(job_obj, tag: str = "") -> None:
    get_client().rpush(RUNS, f"{job_obj.id}:{os.getpid()}:{tag}")


def runs(client, job_id: str | None = None, tag: str | None = None) -> list[str]:
    entries = client.lrange(RUNS, 0, -1)
    entries = [e.decode() if isinstance(e, bytes) else e for e in entries]
    return [e for e in entries if (job_id is None or e.startswith(job_id)) and (tag is None or e.endswith(f":{tag}"))]


@job(name="add")
def add(payload, job):
    record(job)
    return {"sum": payload["a"] + payload["b"]}


@job(name="boom", max_attempts=2, backoff_base_seconds=0)
def boom(payload, job):
    record(job)
    raise RuntimeError(payload.get("message", "boom"))


@job(name="sleepy")
def sleepy(payload, job):
    record(job, "start")
    time.sleep(payload.get("seconds", 1))
    record(job, "end")
    return "slept"


def exhausted(job_obj):
    get_client().rpush("test:exhausted", job_obj.id)


@job(name="flaky", queue="fast", max_attempts=3, on_max_attempts_exhausted=exhausted, backoff_base_seconds=0)
def flaky(payload, job):
    record(job)
    if job.attempts <= payload.get("fail_times", 99):
        raise ValueError(f"attempt {job.attempts} failed")
    return job.attempts


def slow_exhausted(job_obj):
    # A slow SMTP server behind mail_admins, say.
    time.sleep(3)
    get_client().rpush("test:exhausted", job_obj.id)


@job(name="slow_hook", queue="fast", max_attempts=1, on_max_attempts_exhausted=slow_exhausted)
def slow_hook(payload, job):
    record(job)
    raise ValueError("fails, and its hook is slow")


@job(name="explicit")
def explicit(payload, job):
    record(job, payload["do"])
    action = payload["do"]
    if action == "completed":
        job.completed({"explicit": True})
    elif action == "failed":
        job.failed("told to fail")
    elif action == "requeue":
        if job.attempts < 2:
            job.requeue()
        else:
            job.completed("second time")
    elif action == "delete":
        job.delete()
    elif action == "nack":
        if int(job.fields.get("nacks") or 0) < 1:
            job.nack("not yet")
        else:
            job.completed("after nack")
    return "ignored after an explicit call"


def not_before_second_look(payload, job_obj):
    client = get_client()
    return client.incr(f"test:looks:{job_obj.id}") >= 2


@job(name="deferred", preflight={"okay_to_run": not_before_second_look, "requeue_delay_in_seconds": 0.3})
def deferred(payload, job):
    record(job)
    return job.attempts


@job(name="requeue_on_failure", queue="fast", requeue_on_failure=True, requeue_delay_seconds=0.5, max_attempts=2)
def requeue_on_failure_job(payload, job):
    record(job)
    raise RuntimeError("again later")


@job(name="bad_result")
def bad_result(payload, job):
    return {"not json": object()}


@job(name="exits")
def exits(payload, job):
    raise SystemExit(3)


@job(name="once", delivery="at-most-once", max_attempts=3)
def once(payload, job):
    record(job)
    if payload.get("fail"):
        raise RuntimeError("failed once, and once only")
    if payload.get("sleep"):
        time.sleep(payload["sleep"])
    return "ran"


@job(name="once_sees_its_start", delivery="at-most-once")
def once_sees_its_start(payload, job):
    # Whether Redis knew this run began before the handler's first line.
    started = get_client().hget(f"queue:{job.queue}:job:{job.id}", "started")
    started = started.decode() if isinstance(started, bytes) else started
    record(job, "known" if started == job.claim_token else "unknown")


@job(name="nacker", max_nacks=2)
def nacker(payload, job):
    record(job)
    job.nack("not ready")


# Jobs that can only all finish when this many run at the same time.
TOGETHER = 6
together_barrier = threading.Barrier(TOGETHER)


@job(name="together")
def together(payload, job):
    # Raises BrokenBarrierError (failing the job) unless TOGETHER runners hold one at once.
    together_barrier.wait(timeout=20)
    return threading.get_ident()


@job(name="uses_db")
def uses_db(payload, job):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    # Django never closes an in-memory SQLite database (the tests' database),
    # and Python 3.13 warns about a sqlite3 connection left to the garbage
    # collector: close the raw one; the next job in this thread opens another.
    connection.connection.close()
    connection.connection = None
    return threading.get_ident()


@job(name="kills_worker", queue="low", max_attempts=1)
def kills_worker(payload, job):
    # A job that kills its worker every time (a segfault in a C extension, the
    # OOM killer): it must be dead-lettered once its attempts are used up.
    import signal

    record(job)
    os.kill(os.getpid(), signal.SIGKILL)


@job(name="loud_failure", queue="fast", max_attempts=3)
def loud_failure(payload, job):
    # A handler whose exception quotes a whole (huge) input field.
    raise ValueError(f"bad field: {'x' * payload['size']}")


LEDGER = "test:ledger"  # list of JSON {id, claimed_at_ms, start, end, pid}, one per run


@job(name="flow.ledger", queue="fast", max_attempts=5)
def ledger(payload, job):
    # When its claim was stamped (server clock), and when it ran here: the
    # slot is held from before the start to after the end, so the runs'
    # overlap bounds from below what the fleet held at once.
    client = get_client()
    claimed_at_ms = int(client.hget(f"queue:{job.queue}:job:{job.id}", "claimed_at_ms"))
    start = time.time()
    first_run_s = payload.get("first_run_seconds")
    time.sleep(first_run_s if first_run_s is not None and job.attempts == 1 else payload.get("seconds", 0.05))
    end = time.time()
    entry = {"id": job.id, "claimed_at_ms": claimed_at_ms, "start": start, "end": end, "pid": os.getpid()}
    client.rpush(LEDGER, json.dumps(entry))


def ledger_entries(client) -> list[dict]:
    return [json.loads(e) for e in client.lrange(LEDGER, 0, -1)]


# ------------------------------------------------------------ async handlers

# async_wait jobs awaiting now in this process, and the most there ever were at once
# (one event loop runs them all: no lock needed).
ASYNC_AWAITING = {"now": 0, "most": 0}


@job(name="async_add")
async def async_add(payload, job):
    record(job)
    await asyncio.sleep(0)
    return {"sum": payload["a"] + payload["b"], "async": True}


@job(name="async_wait", queue="fast", max_attempts=3)
async def async_wait(payload, job):
    """Awaits ``seconds`` (on the first attempt, ``first_run_seconds`` if
    given), noting how many such jobs await at once."""
    ASYNC_AWAITING["now"] += 1
    ASYNC_AWAITING["most"] = max(ASYNC_AWAITING["most"], ASYNC_AWAITING["now"])
    record(job, "start")
    try:
        first = payload.get("first_run_seconds")
        await asyncio.sleep(first if first is not None and job.attempts == 1 else payload.get("seconds", 0.1))
        if payload.get("touch"):
            assert await job.atouch(5)
        if payload.get("progress"):
            await job.aprogress(0.5, message="half way")
    finally:
        ASYNC_AWAITING["now"] -= 1
    record(job, "end")
    return "waited"


@job(name="async_boom", max_attempts=2, backoff_base_seconds=0)
async def async_boom(payload, job):
    record(job)
    await asyncio.sleep(0)
    raise RuntimeError("async boom")


@job(name="async_blocks")
async def async_blocks(payload, job):
    time.sleep(payload.get("seconds", 0.6))  # a blocking call in an async handler: the loop stalls
    return "blocked"


@job(name="async_cancellable", max_attempts=3)
async def async_cancellable(payload, job):
    record(job, "start")
    for _ in range(2000):
        job.raise_if_cancelled()
        await asyncio.sleep(0.01)
    return "not cancelled"


@job(name="async_stubborn", queue="fast")
async def async_stubborn(payload, job):
    """Goes on after its first cancellation (a handler that catches CancelledError)."""
    record(job, "start")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(4)
    return "finished"


@job(name="async_inner_cancelled", max_attempts=3, backoff_base_seconds=0)
async def async_inner_cancelled(payload, job):
    """An inner task it awaits is cancelled: a failure of this job, not a cancellation of it."""
    record(job)
    inner = asyncio.ensure_future(asyncio.sleep(60))
    asyncio.get_running_loop().call_later(0.01, inner.cancel)
    await inner
