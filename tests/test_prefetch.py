"""Jobs claimed ahead of a free runner (prefetched) and deadlines that meet.

A claim may take several jobs; only the first starts at once. The others use
no attempt until their worker starts them, so a worker that dies with them
hands them back as they were: never dead-lettered, never ``lost``, in either
delivery mode. A TTL that passes ends a job ``expired``, once, whether it
passes while the job waits here, while it runs, or while its lease is renewed.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from django_jobqueue import enqueue
from django_jobqueue.api import get_queue
from django_jobqueue.queue import Outcome, RedisJobQueue
from django_jobqueue.worker import Worker
from tests.test_worker import _fetcher
from tests.testapp.jobs import runs
from tests.workers import start_worker, stop, wait_for


def job_hash(r, job_id: str, queue: str = "jobs") -> dict[str, str]:
    return r.hgetall(f"queue:{queue}:job:{job_id}")


def log_events(r, queue: str = "jobs") -> None:
    """Have the scripts log the queue's events (as a listener asks them to)."""
    r.set(f"queue:{queue}:events:listening", 1)


def events_of(r, job_id: str, queue: str = "jobs") -> list[str]:
    entries = [json.loads(fields["data"]) for _id, fields in r.xrange(f"queue:{queue}:events:log")]
    return [e["event"] for e in entries if e["id"] == job_id]


@pytest.fixture
def engine(redis_server):
    import redis

    client = redis.Redis(port=redis_server.port, decode_responses=True)
    yield lambda **options: RedisJobQueue(client, "jobs", **options)
    client.close()


# ------------------------------------------------------------ the engine


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_a_worker_lost_with_jobs_it_claimed_ahead_hands_them_back_unused(r, engine, delivery):
    log_events(r)
    q = engine(visibility_ms=60_000)
    ids = [q.enqueue({"n": n}, name="add", max_attempts=1, extra={"delivery": delivery}) for n in range(3)]
    first, *ahead = q.claim_many(3, "w1", start=1)
    assert [first.id, *(j.id for j in ahead)] == ids
    assert first.started and first.attempts == 1
    assert not any(j.started for j in ahead) and [j.attempts for j in ahead] == [0, 0]

    q.reclaim_worker_jobs(["w1"])  # w1's heartbeat lapsed: SIGKILLed while the first job ran

    ran = job_hash(r, ids[0])
    assert ran["status"] == ("lost" if delivery == "at-most-once" else "failed")  # its one attempt ran
    for job_id in ids[1:]:
        job = job_hash(r, job_id)
        assert (job["status"], job["attempts"]) == ("pending", "0"), job
        assert events_of(r, job_id) == ["enqueued", "reclaimed"]
    assert q.stats()["failed_depth"] == 1
    # ...and they run next, as if nothing had happened.
    again = q.claim_many(2, "w2")
    assert {j.id for j in again} == set(ids[1:]) and [j.attempts for j in again] == [1, 1]


def test_a_job_claimed_ahead_counts_its_attempt_when_it_starts_completes_or_fails(engine):
    q = engine(max_attempts=2)
    _a, b, c = (q.enqueue({"n": n}, name="add") for n in range(3))
    _first, jb, jc = q.claim_many(3, "w1", start=1)
    assert q.start([jb]) == [Outcome.OK]
    assert q.start([jb]) == [Outcome.OK]  # once per claim: no second attempt
    assert q.get_fields(b)["attempts"] == "1"
    assert q.complete(jc, {"ok": True})  # its start rode on nothing: the completion counts it
    assert q.get_fields(c)["attempts"] == "1"
    assert q.fail_outcome(jb, "boom") is Outcome.RETRYING  # attempt 1 of 2
    retried = q.claim_many(1, "w1")[0]
    assert retried.id == b and retried.attempts == 2
    assert q.fail_outcome(retried, "boom") is Outcome.FAILED


def test_a_job_handed_back_at_shutdown_gives_back_only_an_attempt_it_used(engine):
    q = engine()
    ids = [q.enqueue({"n": n}, name="add") for n in range(2)]
    running, ahead = q.claim_many(2, "w1", start=1)
    for job in (running, ahead):
        assert q.requeue(job, count_attempt=False, front=True, event="released") is Outcome.OK
    assert [q.get_fields(i)["attempts"] for i in ids] == ["0", "0"]


def test_a_job_whose_ttl_passes_while_it_runs_ends_expired_once(r, engine):
    for delivery, max_attempts in (("at-most-once", 3), ("at-least-once", 1), ("at-least-once", 3)):
        log_events(r)
        q = engine(visibility_ms=60_000)
        job_id = q.enqueue({}, name="add", ttl_ms=300, max_attempts=max_attempts, extra={"delivery": delivery})
        job = q.claim_nowait("w1")
        assert job.id == job_id and job.started
        assert 0 < q.touch(job) <= int(job.fields["expires_at_ms"])  # the lease never outlives the TTL
        time.sleep(0.4)
        result = q.sweep()
        assert result.expired == [job_id] and result.dead_lettered == [] and result.reclaimed == []
        assert job_hash(r, job_id)["status"] == "expired"
        assert events_of(r, job_id) == ["enqueued", "started", "expired"], delivery
        assert q.complete(job, {"late": True}) is False  # its run ends late: refused
        assert q.sweep().expired == []  # once
        r.flushall()


def test_a_job_claimed_ahead_whose_ttl_passed_before_it_started_never_runs(r):
    q = get_queue("jobs")
    first = enqueue("add", {"a": 1, "b": 1})
    short = enqueue("add", {"a": 2, "b": 2}, ttl=0.3)
    ended: list[tuple[str, Outcome]] = []
    fetcher = _fetcher(q, prefetch=1, on_lost=lambda queue, claimed, outcome: ended.append((claimed.id, outcome)))
    (_q, job), _empty = fetcher.next_job()
    assert job.id == first  # `short` waits here, claimed ahead
    time.sleep(0.4)  # the first job runs long: `short`'s TTL passes
    assert fetcher.next_job() == (None, False)  # not handed to a runner
    assert ended == [(short, Outcome.EXPIRED)]
    assert job_hash(r, short)["status"] == "expired"
    assert r.lrange(q.keys.processing, 0, -1) == [first]
    assert r.ttl(q.keys.job(short)) > 0  # an expired hash does not stay for ever


def test_a_last_chance_run_is_started_in_redis_only_as_its_handler_is_called(r):
    # At-most-once, or the last attempt: a worker killed between the claim
    # and the handler must not use the job's only chance up, and Redis must
    # know the run began before the handler's first line.
    q = get_queue("jobs")
    first = enqueue("once_sees_its_start", {})
    ahead = enqueue("once_sees_its_start", {})
    fetcher = _fetcher(q, prefetch=1)
    (_q, job), _empty = fetcher.next_job()
    assert job.id == first and job.needs_start and job.attempts == 0
    assert job_hash(r, first)["attempts"] == "0"  # claimed, first of its claim, yet not started
    (_q, job), _empty = fetcher.next_job()
    assert job.id == ahead and job.needs_start
    assert job_hash(r, ahead)["attempts"] == "0"


def test_a_worker_starts_a_last_chance_run_in_redis_before_the_handler_runs(r):
    ids = [enqueue("once_sees_its_start", {}) for _ in range(4)]
    worker = Worker(["jobs"], concurrency=1, burst=True)  # claims of 1 + 1: one first, one ahead
    assert worker.run(install_signals=False) == 0
    assert sorted(e.rsplit(":", 1)[1] for e in runs(r)) == ["known"] * 4
    assert [job_hash(r, i)["attempts"] for i in ids] == ["1"] * 4


def test_an_at_least_once_job_claimed_ahead_starts_with_no_round_trip_of_its_own(r):
    q = get_queue("jobs")
    enqueue("add", {"a": 1, "b": 1})
    second = enqueue("add", {"a": 2, "b": 2})
    third = enqueue("add", {"a": 3, "b": 3})
    fetcher = _fetcher(q, prefetch=2)
    fetcher.next_job()
    (_q, job), _empty = fetcher.next_job()
    assert job.id == second and job.attempts == 1  # counted here...
    assert job_hash(r, second)["attempts"] == "0"  # ...and in Redis with the next call made
    fetcher.next_job()  # takes `third`: nothing to send yet either
    fetcher.flush()  # the next pipeline carries both starts
    assert [job_hash(r, i)["attempts"] for i in (second, third)] == ["1", "1"]


# ------------------------------------------------------------ a real worker


@pytest.mark.parametrize(
    "ahead",
    [("once", {}, {}), ("add", {"a": 1, "b": 2}, {"max_attempts": 1})],
    ids=["at-most-once", "on its last attempt"],
)
def test_a_worker_sigkilled_while_its_first_job_runs_loses_none_of_the_jobs_it_claimed_ahead(r, redis_server, ahead):
    name, payload, options = ahead
    slow = enqueue("sleepy", {"seconds": 30})
    waiting = enqueue(name, payload, **options)
    proc = start_worker(redis_server.url, "--concurrency", "1")  # with PREFETCH unset: claims of 1 + 1
    try:
        wait_for(lambda: runs(r, slow, "start"), what="the slow job to start")
        assert job_hash(r, waiting)["status"] == "processing"  # claimed ahead
        wid = job_hash(r, slow)["worker"]
    finally:
        stop(proc, signal.SIGKILL)
    get_queue("jobs").reclaim_worker_jobs([wid])  # what the sweep does once its heartbeat lapses
    job = job_hash(r, waiting)
    assert (job["status"], job["attempts"]) == ("pending", "0"), job
    assert job_hash(r, slow)["status"] == "pending" and job_hash(r, slow)["attempts"] == "1"
    assert runs(r, waiting) == []
