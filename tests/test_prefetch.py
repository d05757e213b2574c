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
import subprocess
import threading
import time

import pytest
import redis

from django_jobqueue import enqueue
from django_jobqueue.api import get_queue
from django_jobqueue.queue import Outcome, RedisJobQueue
from django_jobqueue.worker import Worker
from django_jobqueue.worker.fetcher import Fetcher
from django_jobqueue.worker.job import Job
from tests.helpers.redis_data import job_hash, listen_to_events
from tests.helpers.servers import FlakyProxy
from tests.helpers.waiting import wait_for
from tests.helpers.workers import driven_fetcher, start_worker, stop
from tests.testapp.jobs import runs


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
    listen_to_events(r)
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
        listen_to_events(r)
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
    fetcher = driven_fetcher(q, prefetch=1, on_lost=lambda queue, claimed, outcome: ended.append((claimed.id, outcome)))
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
    fetcher = driven_fetcher(q, prefetch=1)
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
    fetcher = driven_fetcher(q, prefetch=2)
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


# ------------------------------------------------------------ faults found in review


def test_a_job_that_kills_its_worker_from_a_lower_priority_queue_is_counted_engine_level(r):
    # Each time, the job is claimed ahead behind a job of a higher-priority
    # queue; a runner takes it and the process dies before its next pipeline.
    # It may run once uncounted (its start was riding), never more.
    high, low = get_queue("high"), get_queue("low")
    poison = enqueue("add", {"a": 0, "b": 0}, queue="low", max_attempts=2)
    rounds = 0
    while low.get_fields(poison)["status"] == "pending" and rounds < 6:
        rounds += 1
        enqueue("add", {"a": 1, "b": 1}, queue="high")  # the worker's high queue always has a job
        wid = f"w{rounds}"
        fetcher = driven_fetcher(high, low, worker_id=wid, prefetch=1)
        (_q, first), _ = fetcher.next_job()
        assert first.queue == "high" and first.started
        assert high.complete(first, "done")
        (_q, job), _ = fetcher.next_job()  # a runner takes the job claimed ahead and runs it...
        assert job.id == poison
        if job.needs_start:  # its last attempt: the worker starts it right before the handler
            assert low.start([job]) == [Outcome.OK]
        for q in (high, low):  # ...and the process dies: no flush; its heartbeat lapses
            q.reclaim_worker_jobs([wid])
    fields = low.get_fields(poison)
    assert (fields["status"], fields["attempts"]) == ("failed", "2"), fields
    assert rounds <= 3  # max_attempts runs, plus at most one whose start never reached Redis


def test_a_job_that_kills_its_worker_from_a_lower_priority_queue_is_counted_real_worker(r, redis_server):
    low = get_queue("low")
    poison = enqueue("kills_worker", {})
    for _n in range(4):
        # A high-priority job that finishes with job.completed() (sent at once, not batched).
        enqueue("explicit", {"do": "completed"}, queue="high")
        proc = start_worker(redis_server.url, "-q", "high", "-q", "low", "--concurrency", "1")
        try:
            proc.wait(timeout=30)  # killed by the job
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        proc.communicate()
        wid = low.get_fields(poison)["worker"]
        low.reclaim_worker_jobs([wid])  # its heartbeat lapsed: what the next sweep does
        get_queue("high").reclaim_worker_jobs([wid])
        if low.get_fields(poison)["status"] != "pending":
            break
    fields = low.get_fields(poison)
    assert len(runs(r, poison)) <= 2, (runs(r, poison), fields)  # max_attempts=1: one run, two at worst
    assert fields["status"] == "failed", fields


def test_a_job_claimed_ahead_by_a_worker_taken_for_lost_is_not_run_by_it_later(r, redis_server):
    q = get_queue("jobs")
    slow = enqueue("sleepy", {"seconds": 3})
    ahead = enqueue("add", {"a": 1, "b": 2})
    proc = start_worker(redis_server.url, "--concurrency", "1")  # PREFETCH unset: claims of 1 + 1
    try:
        wait_for(lambda: runs(r, slow, "start"), what="the slow job to start")
        assert r.hget(q.keys.job(ahead), "status") == "processing"  # claimed ahead, waiting
        wid = r.hget(q.keys.job(slow), "worker")
        proc.send_signal(signal.SIGSTOP)  # frozen (VM pause, a C call holding the GIL, ...)
        time.sleep(2.0)  # past WORKER_TIMEOUT_SECONDS (1.5 here)
        q.reclaim_worker_jobs([wid])  # another worker's sweep takes it for lost
        fields = q.get_fields(ahead)
        assert (fields["status"], fields["attempts"]) == ("pending", "0")  # "never started: no attempt used"
        theirs = {j.id: j for j in q.claim_many(2, "w2")}  # another worker runs both
        assert ahead in theirs
        for job in theirs.values():
            assert q.complete(job, "done elsewhere")
        proc.send_signal(signal.SIGCONT)
        time.sleep(3.0)  # the slow job's handler returns; the runner takes the job it claimed ahead
    finally:
        proc.send_signal(signal.SIGCONT)
        _code, _out, err = stop(proc)
    assert runs(r, ahead) == [], err[-3000:]


def test_a_job_claimed_ahead_whose_ttl_passed_during_a_slow_fetch_never_runs(r, redis_server):
    proxy = FlakyProxy(redis_server.port)  # the low queue's node answers slowly this time
    slow = redis.Redis(port=proxy.port, decode_responses=True)
    slow.ping()
    high, low = get_queue("high"), RedisJobQueue(slow, "low")
    enqueue("add", {"a": 1, "b": 1}, queue="high")
    short = enqueue("add", {"a": 2, "b": 2}, queue="high", ttl=0.45)
    ended = []
    fetcher = Fetcher(
        [high, low],
        "w1",
        block=False,
        block_ms=0,
        prefetch=2,
        on_claimed=lambda q, jobs: None,
        on_acked=lambda acked: None,
        on_lost=lambda q, claimed, outcome: ended.append((claimed.id, outcome)),
    )
    try:
        proxy.stall()
        threading.Timer(0.6, proxy.resume).start()
        began = time.monotonic()
        (_q, first), _empty = fetcher.next_job()  # high: 2 jobs; low's claim (need 1) waits 0.6 s
        assert time.monotonic() - began >= 0.55
        assert first.queue == "high"
        taken = fetcher.next_job()  # a free runner takes `short` at once: its TTL passed 0.15 s ago
        assert taken == (None, False), (taken, r.hgetall(high.keys.job(short)))
        assert r.hget(high.keys.job(short), "status") == "expired"
    finally:
        slow.close()
        proxy.close()


def test_a_run_of_a_job_claimed_ahead_nacked_before_its_start_went_out_has_its_started_event(r):
    listen_to_events(r)
    q = get_queue("jobs")
    first = enqueue("add", {"a": 1, "b": 1})
    ahead = enqueue("add", {"a": 2, "b": 2})
    fetcher = driven_fetcher(q, prefetch=1)
    (_q, job1), _ = fetcher.next_job()
    assert job1.id == first
    (_q, claimed), _ = fetcher.next_job()  # a runner takes it: its start rides on the next pipeline...
    assert claimed.id == ahead
    Job(q, claimed).nack()  # ...but its handler nacks / deletes it first (sent at once)
    fetcher.flush()
    # The same run of a job that started with its claim shows "started" first:
    assert events_of(r, first)[:2] == ["enqueued", "started"]
    assert "started" in events_of(r, ahead), events_of(r, ahead)


def test_a_job_never_stamped_counts_no_delivery(r, redis_server):
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    q = RedisJobQueue(client, "jobs", visibility_ms=300)
    job_id = q.enqueue({}, name="add", extra={"max_deliveries": "1"})
    r.lmove(q.keys.pending, q.keys.claiming, "RIGHT", "LEFT")  # BLMOVE, then the worker died
    q.sweep()  # first seen
    time.sleep(0.7)
    assert q.sweep().reclaimed == [job_id]
    fields = q.get_fields(job_id)
    assert (fields["status"], fields["attempts"]) == ("pending", "0")
    assert fields.get("additional_deliveries", "0") == "0", fields  # it never started
    # ...so that its one real run, cut off by a worker's death, is retried, not dead-lettered:
    q.claim_nowait("w1")
    q.reclaim_worker_jobs(["w1"])
    assert q.get_fields(job_id)["status"] == "pending", q.get_fields(job_id)
    client.close()


def test_a_completion_refused_for_a_key_of_the_wrong_type_never_discards_the_claim_beside_it(r):
    # The worker's pipeline carries the completions of the jobs it ran and its
    # next claim: a `completed` list of the wrong type (written by hand) fails
    # the completion, and the claim that ran in the same pipeline must still
    # hand its jobs to runners (dropped, they would wait out their leases and,
    # at-most-once, end lost unrun).
    from django_jobqueue.worker.fetcher import Ack

    q = get_queue("jobs")
    first = enqueue("add", {"a": 1, "b": 1})
    then = [enqueue("once", {}) for _ in range(2)]
    fetcher = driven_fetcher(q, prefetch=0)
    (_q, job), _empty = fetcher.next_job()
    assert job.id == first
    fetcher.ack(Ack(q, job, '{"sum": 2}', True))  # its handler returned: the completion rides next
    r.set(q.keys.completed, "not a list")
    (_q, nxt), _empty = fetcher.next_job()  # completion refused (WRONGTYPE), claim taken
    assert nxt.id == then[0]
    assert job_hash(r, first)["status"] == "processing"  # refused: nothing changed, tried again later
    r.delete(q.keys.completed)
    fetcher.flush()
    assert job_hash(r, first)["status"] == "completed"
