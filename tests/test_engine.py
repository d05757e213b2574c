"""The engine on its own (RedisJobQueue over a real redis-server), as the seed describes it."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from django_jobqueue.engine.ids import is_job_id, job_id_time_ms
from django_jobqueue.queue import ClaimedJob, Outcome, RedisJobQueue


@pytest.fixture
def q(r, clock):
    return RedisJobQueue(r, "jobs", visibility_ms=5000, max_attempts=3, clock=clock)


def test_enqueue_writes_the_seed_keyspace(q, r):
    job_id = q.enqueue({"kind": "email", "recipient": "alice@example.com"}, name="email")

    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["id"] == job_id
    assert json.loads(h["payload"]) == {"kind": "email", "recipient": "alice@example.com"}
    assert h["status"] == "pending"
    assert h["attempts"] == "0"
    assert h["max_attempts"] == "3"
    assert h["claim_token"] == ""
    assert h["name"] == "email" and h["queue"] == "jobs"
    assert int(h["enqueued_at_ms"]) == q.clock()
    assert r.hget("queue:jobs:stats", "enqueued") == "1"


def test_job_ids_have_96_random_bits_and_sort_by_creation_time(q):
    ids = []
    for _ in range(5):
        ids.append(q.enqueue({}))
        q.clock.advance(0.001)
    assert all(is_job_id(i) for i in ids)
    assert ids == sorted(ids)
    assert job_id_time_ms(ids[0]) == q.clock() - 5
    assert len({i[12:] for i in ids}) == 5  # the random part: 24 hex = 96 bits


def test_claim_moves_to_processing_and_stamps_token_time_attempts(q, r, clock):
    job_id = q.enqueue({"n": 1})
    job = q.claim(timeout_ms=100, worker_id="w1")

    assert isinstance(job, ClaimedJob)
    assert (job.id, job.payload, job.attempts) == (job_id, {"n": 1}, 1)
    assert len(job.claim_token) == 32
    assert r.lrange("queue:jobs:processing", 0, -1) == [job_id]
    assert r.llen("queue:jobs:pending") == 0
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["status"] == "processing"
    assert h["claim_token"] == job.claim_token
    assert int(h["claimed_at_ms"]) == clock()
    assert h["worker"] == "w1"
    assert r.zscore("queue:jobs:leases", job_id) == clock() + 5000


def test_claim_is_fifo(q):
    ids = [q.enqueue({"n": n}) for n in range(3)]
    assert [q.claim(0).id for _ in ids] == ids


def test_claim_on_empty_queue_returns_none_after_timeout(q):
    started = time.monotonic()
    assert q.claim(timeout_ms=200) is None
    assert time.monotonic() - started >= 0.15


def test_blocking_claim_wakes_when_a_job_arrives(q, r):
    threading.Timer(0.2, lambda: q.enqueue({"late": True})).start()
    job = q.claim(timeout_ms=3000)
    assert job is not None and job.payload == {"late": True}
    # The blocking path goes through the claiming list and leaves nothing there.
    assert r.llen("queue:jobs:claiming") == 0
    assert r.lrange("queue:jobs:processing", 0, -1) == [job.id]


def test_complete_stores_result_history_and_ttl(q, r, clock):
    job_id = q.enqueue({})
    job = q.claim(0)
    assert q.complete(job, {"sent_at": "2026-05-11T15:00:00Z"}) is True

    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["status"] == "completed"
    assert json.loads(h["result"]) == {"sent_at": "2026-05-11T15:00:00Z"}
    assert int(h["completed_at_ms"]) == clock()
    assert r.lrange("queue:jobs:completed", 0, -1) == [job_id]
    assert r.llen("queue:jobs:processing") == 0
    assert r.zcard("queue:jobs:leases") == 0
    assert 3590 < r.ttl(f"queue:jobs:job:{job_id}") <= 3600
    assert q.stats()["completed_total"] == 1


def test_completed_history_is_capped(r, clock):
    q = RedisJobQueue(r, "jobs", history=3, clock=clock)
    for _ in range(5):
        q.enqueue({})
        q.complete(q.claim(0), None)
    assert r.llen("queue:jobs:completed") == 3


def test_cleanup_none_keeps_hashes(r):
    q = RedisJobQueue(r, "jobs", completed_ttl_s=None)
    job_id = q.enqueue({})
    q.complete(q.claim(0), 1)
    assert r.ttl(f"queue:jobs:job:{job_id}") == -1


def test_fail_retries_then_dead_letters_keeping_last_error(q, r):
    job_id = q.enqueue({})
    for attempt in (1, 2):
        job = q.claim(0)
        assert job.attempts == attempt
        assert q.fail_outcome(job, f"smtp timeout {attempt}") is Outcome.RETRYING
        assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    job = q.claim(0)
    assert q.fail_outcome(job, "smtp timeout 3", traceback="Traceback...") is Outcome.FAILED

    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["status"] == "failed"
    assert h["attempts"] == "3"
    assert h["last_error"] == "smtp timeout 3"
    assert h["last_traceback"] == "Traceback..."
    assert [e["error"] for e in json.loads(h["errors"])] == ["smtp timeout 1", "smtp timeout 2", "smtp timeout 3"]
    assert r.lrange("queue:jobs:failed", 0, -1) == [job_id]
    assert r.llen("queue:jobs:processing") == 0
    stats = q.stats()
    assert (stats["failed_total"], stats["retried_total"]) == (1, 2)


def test_failed_list_is_never_trimmed_by_history(r):
    q = RedisJobQueue(r, "jobs", history=2, max_attempts=1)
    for _ in range(5):
        q.enqueue({})
        q.fail(q.claim(0), "x")
    assert r.llen("queue:jobs:failed") == 5


def test_retry_with_backoff_waits_in_the_scheduled_set(q, r, clock):
    job_id = q.enqueue({})
    assert q.fail_outcome(q.claim(0), "later", retry_delay_ms=10_000) is Outcome.RETRYING
    assert r.zscore("queue:jobs:scheduled", job_id) == clock() + 10_000
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "scheduled"
    assert q.claim(0) is None
    clock.advance(10)
    assert q.claim(0).id == job_id


def test_delayed_job_is_scheduled_until_due(q, r, clock):
    job_id = q.enqueue({"x": 1}, delay_ms=30_000)
    assert r.zscore("queue:jobs:scheduled", job_id) == clock() + 30_000
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "scheduled"
    assert q.claim(0) is None
    clock.advance(29.9)
    assert q.sweep().promoted == 0
    clock.advance(0.1)
    result = q.sweep()
    assert result.promoted == 1
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


def test_sweep_reports_when_the_next_scheduled_job_is_due(q, clock):
    assert q.sweep().next_due_ms is None
    q.enqueue({}, delay_ms=5000)
    assert q.sweep().next_due_ms == 5000


@pytest.mark.parametrize("operation", ["complete", "fail", "touch", "requeue", "delete"])
def test_every_change_after_a_claim_checks_the_token(q, r, operation):
    job_id = q.enqueue({})
    job = q.claim(0)
    stale = ClaimedJob(id=job.id, payload=job.payload, attempts=1, claim_token="not-the-token")
    before = r.hgetall(f"queue:jobs:job:{job_id}")

    if operation == "complete":
        assert q.complete(stale, "x") is False
    elif operation == "fail":
        assert q.fail_outcome(stale, "x") is Outcome.NOT_OWNER
    elif operation == "touch":
        assert q.touch(stale) is None
    elif operation == "requeue":
        assert q.requeue(stale) is Outcome.NOT_OWNER
    else:
        assert q.delete(job_id, "not-the-token") is Outcome.NOT_OWNER

    assert r.hgetall(f"queue:jobs:job:{job_id}") == before
    assert r.lrange("queue:jobs:processing", 0, -1) == [job_id]


@pytest.mark.parametrize("token", ["", "0" * 32])
def test_empty_or_forged_tokens_change_nothing(q, token):
    q.enqueue({})
    job = q.claim(0)
    forged = ClaimedJob(id=job.id, payload=None, attempts=1, claim_token=token)
    assert q.complete(forged) is False
    assert q.complete(job) is True


def test_previous_claims_token_is_refused_after_a_reclaim_and_new_claim(q, r, clock):
    """A worker that hung past the visibility timeout cannot finish the job
    another worker now holds: the seed's core promise."""
    job_id = q.enqueue({})
    first = q.claim(0, worker_id="slow")
    clock.advance(5.001)
    assert q.reclaim_stuck() == [job_id]
    second = q.claim(0, worker_id="fast")
    assert second.attempts == 2 and second.claim_token != first.claim_token

    assert q.complete(first, "late result") is False
    assert q.fail(first, "late failure") is False
    assert q.complete(second, "fresh") is True
    assert json.loads(r.hget(f"queue:jobs:job:{job_id}", "result")) == "fresh"


def test_reclaimed_worker_completing_late_before_anyone_reclaims_again_is_refused(q, r, clock):
    job_id = q.enqueue({})
    first = q.claim(0)
    clock.advance(6)
    q.reclaim_stuck()
    # Nobody has claimed it again yet: still refused, and it stays pending.
    assert q.complete(first, "late") is False
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


def test_finished_job_cannot_be_finished_again(q):
    q.enqueue({})
    job = q.claim(0)
    assert q.complete(job, 1) is True
    assert q.complete(job, 2) is False
    assert q.fail(job, "x") is False


def test_reclaim_only_touches_jobs_past_their_lease(q, clock):
    ids = [q.enqueue({"n": n}) for n in range(3)]
    q.claim(0)
    clock.advance(3)
    q.claim(0)
    q.claim(0)
    clock.advance(2.5)  # the first lease is 5.5 s old, the others 2.5 s
    assert q.reclaim_stuck() == [ids[0]]
    assert q.stats()["reclaimed_total"] == 1


def test_reclaimed_job_goes_to_the_front_and_counts_a_delivery(q, r, clock):
    first = q.enqueue({"n": 1})
    q.claim(0)
    second = q.enqueue({"n": 2})
    clock.advance(6)
    q.reclaim_stuck()
    assert q.claim(0).id == first
    assert r.hget(f"queue:jobs:job:{first}", "additional_deliveries") == "1"
    assert r.lrange("queue:jobs:pending", 0, -1) == [second]


def test_reclaim_dead_letters_a_job_whose_attempts_are_used_up(r, clock):
    """A job that kills its worker every time must not loop forever."""
    q = RedisJobQueue(r, "jobs", visibility_ms=1000, max_attempts=2, clock=clock)
    job_id = q.enqueue({})
    for _ in range(2):
        q.claim(0)
        clock.advance(1.5)
        result = q.sweep()
    assert result.dead_lettered == [job_id]
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["status"] == "failed" and "lease expired" in h["last_error"]
    assert r.lrange("queue:jobs:failed", 0, -1) == [job_id]


def test_touch_extends_the_lease(q, r, clock):
    job_id = q.enqueue({})
    job = q.claim(0)
    clock.advance(4)
    assert q.touch(job) == clock() + 5000
    clock.advance(4)
    assert q.reclaim_stuck() == []
    assert q.complete(job) is True
    assert r.zcard("queue:jobs:leases") == 0
    assert job_id


def test_touch_never_extends_past_the_ttl(q, clock):
    q.enqueue({}, ttl_ms=6000)
    job = q.claim(0)
    clock.advance(4)
    assert q.touch(job) == clock() + 2000


def test_reclaim_cost_grows_with_jobs_due_not_jobs_in_flight(r, clock):
    """100 000 jobs in processing, 10 overdue: the sweep reads about 10."""
    q = RedisJobQueue(r, "jobs", visibility_ms=60_000, clock=clock)
    pipe = r.pipeline(transaction=False)
    now = clock()
    for n in range(100_000):
        job_id = f"{n:036d}"
        pipe.hset(f"queue:jobs:job:{job_id}", mapping={"id": job_id, "status": "processing", "attempts": 1})
        pipe.lpush("queue:jobs:processing", job_id)
        # Ten leases ran out long ago; the rest are far in the future.
        pipe.zadd("queue:jobs:leases", {job_id: now - 1 if n < 10 else now + 60_000})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.config_resetstat()
    reclaimed = q.reclaim_stuck()
    assert len(reclaimed) == 10
    stats = r.info("commandstats")
    hset_calls = stats.get("cmdstat_hset", {}).get("calls", 0)
    hmget_calls = stats.get("cmdstat_hmget", {}).get("calls", 0)
    # A few reads and writes per due job, never per job in flight:
    assert 10 <= hmget_calls <= 30 and hset_calls <= 30


def test_sweep_costs_nothing_when_nothing_is_due(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    for _ in range(50):
        q.enqueue({})
        q.claim(0)
    r.config_resetstat()
    result = q.sweep()
    assert (result.reclaimed, result.expired, result.promoted) == ([], [], 0)
    calls = r.info("commandstats")
    # The three scripts each did a bounded range read; nothing per job.
    assert "cmdstat_hmget" not in calls and "cmdstat_lrem" not in calls


def test_crash_between_blmove_and_stamp_is_recovered_from_when_first_seen(r, clock):
    """A worker dies after BLMOVE moved the id but before its stamp landed.

    The seed times this fallback from enqueued_at_ms, so a job that waited a
    long time in pending looked overdue the instant it was moved. Here the
    timer starts when a sweep first sees the id stuck.
    """
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    job_id = q.enqueue({})
    clock.advance(3600)  # waited an hour in pending
    assert r.blmove("queue:jobs:pending", "queue:jobs:claiming", 1, "RIGHT", "LEFT") == job_id
    # ... the worker dies here.
    assert q.sweep().reclaimed == []  # first seen now: not overdue
    clock.advance(9.9)
    assert q.sweep().reclaimed == []
    clock.advance(0.1)  # 2 x visibility after it was first seen
    assert q.sweep().reclaimed == [job_id]
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert r.hlen("queue:jobs:unstamped") == 0
    assert q.claim(0).id == job_id


def test_a_stamp_arriving_after_the_sweep_handed_the_job_back_is_refused(r, clock):
    from django_jobqueue.engine import scripts

    q = RedisJobQueue(r, "jobs", visibility_ms=1000, clock=clock)
    job_id = q.enqueue({})
    r.blmove("queue:jobs:pending", "queue:jobs:claiming", 1, "RIGHT", "LEFT")
    q.sweep()
    clock.advance(2)
    assert q.sweep().reclaimed == [job_id]
    other = q.claim(0)  # another worker takes it
    # The first worker's stamp finally arrives:
    late = scripts.get("stamp")(r, q._claim_keys(), [clock(), "late-token", 1000, "w1", job_id])
    assert not late
    assert r.hget(f"queue:jobs:job:{job_id}", "claim_token") == other.claim_token


def test_a_blocking_claim_stamps_an_id_a_dead_worker_left_on_the_claiming_list(r, clock):
    """The stamp sent behind BLMOVE takes the head of claiming, whoever moved
    it there: a job a worker died holding there runs without waiting for the
    sweep, and only once."""
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    job_id = q.enqueue({"left": "behind"})
    r.blmove("queue:jobs:pending", "queue:jobs:claiming", 1, "RIGHT", "LEFT")
    q.sweep()  # a sweep has seen it stuck, and started its timer
    assert r.hexists("queue:jobs:unstamped", job_id)

    job = q.claim(timeout_ms=100, worker_id="w2")  # pending is empty: BLMOVE times out
    assert job is not None and job.id == job_id and job.payload == {"left": "behind"}
    assert r.llen("queue:jobs:claiming") == 0
    assert r.hlen("queue:jobs:unstamped") == 0  # the sweep will not hand it back
    assert r.hget(f"queue:jobs:job:{job_id}", "worker") == "w2"
    clock.advance(20)
    assert q.sweep().reclaimed == [job_id]  # by its lease now, like any claimed job
    # The dead worker's own stamp, had it come after all, is refused.
    from django_jobqueue.engine import scripts

    late = scripts.get("stamp")(r, q._claim_keys(), [clock(), "late-token", 1000, "w1", job_id])
    assert not late


def test_a_blocking_claim_on_a_queue_paused_while_it_waited_puts_the_job_back(q, r):
    threading.Timer(0.2, lambda: (q.pause("out"), q.enqueue({"n": 1}))).start()
    assert q.claim(timeout_ms=3000) is None
    assert len(r.lrange("queue:jobs:pending", 0, -1)) == 1
    assert r.llen("queue:jobs:claiming") == 0 and r.llen("queue:jobs:processing") == 0


def test_a_crash_after_the_handler_returned_before_complete_reruns_the_job(q, clock):
    """At-least-once: the result never reached Redis, so the job runs again."""
    job_id = q.enqueue({})
    q.claim(0)  # the handler ran, then the worker died before complete()
    clock.advance(5.5)
    assert q.reclaim_stuck() == [job_id]
    again = q.claim(0)
    assert again.attempts == 2
    assert q.complete(again, "done") is True


def test_script_flush_mid_run_is_handled(q, r):
    q.enqueue({})
    r.script_flush()
    job = q.claim(0)
    r.script_flush()
    assert q.complete(job, "ok") is True
    r.script_flush()
    assert len(q.enqueue_many([{}, {}])) == 2
    r.script_flush()
    assert q.sweep().reclaimed == []


def test_orphan_id_without_a_hash_is_dropped_and_counted(q, r):
    r.lpush("queue:jobs:pending", "f" * 36)
    real = q.enqueue({"ok": True})
    r.lpush("queue:jobs:pending", "e" * 36)  # a newer orphan too
    job = q.claim(0)
    assert job.id == real
    assert q.stats()["orphans_total"] == 1
    assert q.claim(0) is None
    assert q.stats()["orphans_total"] == 2
    assert r.llen("queue:jobs:processing") == 1


def test_non_json_payload_found_in_redis_is_reported_not_unpickled(q, r):
    import pickle  # only to forge what an attacker might write; never loaded

    job_id = q.enqueue({})
    r.hset(f"queue:jobs:job:{job_id}", "payload", pickle.dumps({"x": 1}).hex())
    job = q.claim(0)
    assert job.payload is None
    assert "not valid JSON" in job.payload_error


def test_stale_duplicate_entry_is_never_handed_out_twice(q, r):
    job_id = q.enqueue({})
    r.lpush("queue:jobs:pending", job_id)  # a duplicate id, written by hand
    first = q.claim(0)
    assert first.id == job_id
    assert q.claim(0) is None
    assert r.lrange("queue:jobs:processing", 0, -1) == [job_id]


def test_ttl_expires_a_pending_job_and_it_never_runs(q, r, clock):
    job_id = q.enqueue({}, ttl_ms=2000)
    clock.advance(2)
    result = q.sweep()
    assert result.expired == [job_id]
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert h["status"] == "expired"
    assert r.llen("queue:jobs:pending") == 0
    assert q.claim(0) is None
    assert q.stats()["expired_total"] == 1


def test_ttl_checked_at_claim_even_before_the_sweep(q, r, clock):
    job_id = q.enqueue({}, ttl_ms=1000)
    clock.advance(1)
    assert q.claim(0) is None
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "expired"


def test_ttl_expires_a_scheduled_and_a_running_job(q, r, clock):
    scheduled = q.enqueue({}, delay_ms=10_000, ttl_ms=20_000)
    running_id = q.enqueue({}, ttl_ms=3000)
    running = q.claim(0)
    clock.advance(20)
    assert sorted(q.sweep().expired) == sorted([scheduled, running_id])
    assert q.complete(running, "too late") is False
    assert r.zcard("queue:jobs:scheduled") == 0 and r.llen("queue:jobs:processing") == 0


def test_unique_key_returns_the_unfinished_holder(q, r):
    first = q.enqueue({"n": 1}, unique_key="invoice:42")
    assert q.enqueue({"n": 2}, unique_key="invoice:42") == first
    assert r.llen("queue:jobs:pending") == 1
    job = q.claim(0)
    assert q.enqueue({"n": 3}, unique_key="invoice:42") == first  # still running
    q.complete(job, None)
    third = q.enqueue({"n": 4}, unique_key="invoice:42")
    assert third != first
    assert r.hget("queue:jobs:unique", "invoice:42") == third


def test_unique_key_is_released_when_the_job_is_dead_lettered(r):
    q = RedisJobQueue(r, "jobs", max_attempts=1)
    first = q.enqueue({}, unique_key="k")
    q.fail(q.claim(0), "x")
    assert q.enqueue({}, unique_key="k") != first


def test_bulk_enqueue_is_chunked_under_lua_limits(q, r):
    ids = q.enqueue_many([{"n": n} for n in range(5_000)])
    assert len(ids) == len(set(ids)) == 5_000
    assert r.llen("queue:jobs:pending") == 5_000
    assert q.claim(0).payload == {"n": 0}


def test_events_are_published_for_every_state_change(q, r, clock):
    pubsub = r.pubsub()
    pubsub.subscribe("queue:jobs:events")
    pubsub.get_message(timeout=1)
    job_id = q.enqueue({}, name="email")
    job = q.claim(0)
    q.complete(job, {"ok": 1})
    events = []
    while len(events) < 3:
        msg = pubsub.get_message(timeout=2)
        assert msg is not None, events
        if msg["type"] == "message":
            events.append(json.loads(msg["data"]))
    pubsub.close()
    assert [e["event"] for e in events] == ["enqueued", "started", "completed"]
    for e in events:
        assert {"id", "queue", "name", "event", "status", "attempts", "ts_ms"} <= set(e)
        assert (e["id"], e["queue"], e["name"]) == (job_id, "jobs", "email")
    assert events[2]["result"] == {"ok": 1}
    assert events[1]["attempts"] == events[2]["attempts"] == 1


def test_stats_reports_depths_counters_and_oldest_pending_age(q):
    q.enqueue({})
    q.enqueue({}, delay_ms=60_000)
    s = q.stats()
    for key in (
        "pending_depth",
        "processing_depth",
        "completed_depth",
        "failed_depth",
        "visibility_ms",
        "enqueued_total",
        "completed_total",
        "failed_total",
        "reclaimed_total",
    ):
        assert key in s
    assert s["pending_depth"] == 1 and s["scheduled_depth"] == 1 and s["enqueued_total"] == 2
    assert s["oldest_pending_age_ms"] is not None


def test_counters_are_shared_by_every_client(r, redis_server):
    q1 = RedisJobQueue(r, "jobs")
    other = redis.Redis(port=redis_server.port, decode_responses=True)
    q2 = RedisJobQueue(other, "jobs")
    q1.enqueue({})
    q2.complete(q2.claim(0), None)
    assert q1.stats()["completed_total"] == 1 and q1.stats()["enqueued_total"] == 1
    other.close()


def test_requeue_with_and_without_using_an_attempt(q, r, clock):
    job_id = q.enqueue({})
    job = q.claim(0)
    assert q.requeue(job, delay_ms=1000, count_attempt=False, event="deferred") is Outcome.OK
    assert r.hget(f"queue:jobs:job:{job_id}", "attempts") == "0"
    clock.advance(1)
    job = q.claim(0)
    assert job.attempts == 1
    assert q.requeue(job) is Outcome.OK
    assert q.claim(0).attempts == 2


def test_delete_and_retry_from_the_shell(q, r):
    job_id = q.enqueue({})
    running = q.claim(0)
    assert q.delete(job_id) is Outcome.NOT_OWNER  # running: refuse without its token
    q.fail(running, "x", terminal=True)
    assert r.lrange("queue:jobs:failed", 0, -1) == [job_id]
    assert q.retry(job_id) is Outcome.OK
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert (h["status"], h["attempts"], h["last_error"], h["replays"]) == ("pending", "0", "x", "1")
    assert q.delete(job_id) is Outcome.OK
    assert not r.exists(f"queue:jobs:job:{job_id}") and r.llen("queue:jobs:pending") == 0
    assert q.delete(job_id) is Outcome.MISSING


def test_cluster_keyspace_shares_one_hash_slot(r):
    q = RedisJobQueue(r, "jobs", cluster=True)
    assert q.keys.pending == "queue:{jobs}:pending"
    job_id = q.enqueue({})
    assert r.lrange("queue:{jobs}:pending", 0, -1) == [job_id]


def test_claim_many_gives_each_job_its_own_token_and_lease(q, r, clock):
    ids = q.enqueue_many([{"n": n} for n in range(5)])
    jobs = q.claim_many(3, worker_id="w")
    assert [j.id for j in jobs] == ids[:3]
    assert len({j.claim_token for j in jobs}) == 3
    assert r.zcard("queue:jobs:leases") == 3
    assert [o.value for o in q.complete_many([(j, {"n": i}, True) for i, j in enumerate(jobs)])] == ["ok"] * 3
    assert [j.id for j in q.claim_many(10)] == ids[3:]
    assert q.claim_many(10) == []


def test_complete_many_checks_every_token(q):
    q.enqueue_many([{}, {}])
    first, second = q.claim_many(2)
    forged = ClaimedJob(id=second.id, payload=None, attempts=1, claim_token=first.claim_token)
    assert q.complete_many([(first, 1, True), (forged, 2, True)]) == [Outcome.OK, Outcome.NOT_OWNER]
    assert q.complete(second, 3) is True


def test_a_long_processing_list_gives_up_ids_from_the_nearer_end(q, r, clock):
    # LREM scans from one end; the scripts pick the end by the job's claim time,
    # so a job claimed last costs a few steps, not the whole list.
    q.enqueue_many([{}] * 200)
    claimed = []
    for _ in range(200):
        claimed.append(q.claim_nowait("w"))
        clock.advance(0.001)
    newest, middle, oldest = claimed[-1], claimed[100], claimed[0]
    assert q.complete(newest) and q.complete(oldest) and q.complete(middle)
    processing = r.lrange("queue:jobs:processing", 0, -1)
    assert len(processing) == 197
    assert not {newest.id, middle.id, oldest.id} & set(processing)
    assert processing == [c.id for c in reversed(claimed) if c not in (newest, middle, oldest)]
    # The lease of the newest claims runs out first when theirs is shorter: reclaimed from the head.
    q.touch(claimed[-2], lease_ms=1)
    clock.advance(0.01)
    assert q.reclaim_stuck() == [claimed[-2].id]
    assert claimed[-2].id not in r.lrange("queue:jobs:processing", 0, -1)
    assert r.lrange("queue:jobs:pending", 0, -1) == [claimed[-2].id]


def test_enqueue_many_writes_what_enqueue_writes_in_order_and_in_atomic_batches(q, r, clock):
    one = q.enqueue({"n": 0}, name="add", ttl_ms=60_000, extra={"origin": "test"})
    many = q.enqueue_many([{"n": n} for n in range(1, 251)], name="add", ttl_ms=60_000, extra={"origin": "test"})
    single, batched = r.hgetall(f"queue:jobs:job:{one}"), r.hgetall(f"queue:jobs:job:{many[0]}")
    assert set(single) == set(batched)
    assert {k: v for k, v in single.items() if k not in ("id", "payload")} == {
        k: v for k, v in batched.items() if k not in ("id", "payload")
    }
    assert r.zcard("queue:jobs:deadlines") == 251 and int(r.hget("queue:jobs:stats", "enqueued")) == 251
    assert [q.claim_nowait("w").payload["n"] for _ in range(251)] == list(range(251))  # first in, first out

    # A batch resent after its reply was lost adds nothing twice.
    from django_jobqueue.engine.queue import BULK_SCRIPT_JOBS

    batch = [("01resent0000000000000000000000000001", "{}")]
    script, keys, args = q._enqueue_many_call(batch, name="add", delay_ms=0, ttl_ms=0, max_attempts=None, extra=None)
    assert script(r, keys, args) == [1] and script(r, keys, args) == [0]
    assert r.llen("queue:jobs:pending") == 1

    # A shared key of the wrong type stops a batch before it writes anything.
    r.delete("queue:jobs:pending")
    r.set("queue:jobs:scheduled", "not a sorted set")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.enqueue_many([{}] * (BULK_SCRIPT_JOBS + 1))
    assert r.llen("queue:jobs:pending") == 0


# ---------------------------------------------- the connection each thread keeps


def test_a_thread_keeps_its_connection_between_calls_and_survives_a_redis_restart():
    """Direct sends (enqueue, the worker's claims) reuse the calling thread's
    pooled connection; one the server closed meanwhile is reconnected before
    anything is sent, so the call after a restart succeeds at once."""
    from django_jobqueue.devserver import RedisServer
    from django_jobqueue.engine import direct

    server = RedisServer().start()
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        q = RedisJobQueue(client, "jobs")
        first = q.enqueue({"n": 1})
        assert len(client.connection_pool._in_use_connections) == 1  # held by this thread
        q.enqueue({"n": 2})
        assert len(client.connection_pool._in_use_connections) == 1  # the same one
        server.restart(kill=True)
        # No resend to hide a failure here: a claim is never sent twice.
        assert direct.send_direct(client, [("PING",)]) == ["PONG"]
        assert q.claim_many(5) == []  # the restart lost the jobs (no persistence)
        assert q.enqueue({"n": 3}) != first
        server.restart(kill=True)
        # An enqueue skips that check (a system call): its call is sent again
        # after the connection error instead, which the script recognises.
        job_id = q.enqueue({"n": 4})
        assert client.lrange("queue:jobs:pending", 0, -1) == [job_id]
    finally:
        client.close()
        server.cleanup()


def test_a_connection_kept_by_a_thread_goes_back_to_the_pool_when_the_thread_ends(r):
    pool = redis.ConnectionPool(port=r.connection_pool.connection_kwargs["port"], decode_responses=True)
    client = redis.Redis(connection_pool=pool)
    q = RedisJobQueue(client, "jobs")
    t = threading.Thread(target=lambda: q.enqueue({}))
    t.start()
    t.join()
    del t
    import gc

    gc.collect()
    assert len(pool._in_use_connections) == 0 and len(pool._available_connections) == 1
    pool.disconnect()


def test_a_forked_child_never_uses_the_connection_its_parent_keeps(r):
    import os

    from django_jobqueue.engine import direct

    q = RedisJobQueue(r, "jobs")
    q.enqueue({"who": "parent"})
    parents = direct._held.slot.conn
    pid = os.fork()
    if pid == 0:  # the child: enqueue on a connection of its own, then leave at once
        code = 1
        try:
            q.enqueue({"who": "child"})
            code = 0 if direct._held.slot.conn is not parents else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    q.enqueue({"who": "parent again"})  # the parent's connection was not disturbed
    assert r.llen("queue:jobs:pending") == 3


def test_a_capped_pool_gets_its_connection_back_after_every_call(r):
    """With a BlockingConnectionPool a kept connection could starve other
    threads: there every call takes one and gives it back."""
    port = r.connection_pool.connection_kwargs["port"]
    pool = redis.BlockingConnectionPool(port=port, max_connections=1, timeout=2, decode_responses=True)
    q = RedisJobQueue(redis.Redis(connection_pool=pool), "jobs")
    q.enqueue({"thread": "main"})
    other = threading.Thread(target=lambda: q.enqueue({"thread": "other"}))
    other.start()
    other.join(timeout=10)
    assert not other.is_alive()  # it was not left waiting for the only connection
    assert r.llen("queue:jobs:pending") == 2
    pool.disconnect()
