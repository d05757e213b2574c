"""Delivery controls from Disque: at-most-once, nack, dead letter and replay,
TTL, fast acknowledgement, pause, scanning, replication with WAIT, durability."""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis as redis_py

from django_jobqueue import InvalidJobOptions, QueuePaused, ReplicationError, enqueue, enqueue_many, get_queue
from django_jobqueue.devserver import RedisServer
from django_jobqueue.engine.durability import persistence_problem
from django_jobqueue.queue import RedisJobQueue
from tests.helpers.redis_data import job_hash
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain, start_worker, stop
from tests.testapp.jobs import runs

# ------------------------------------------------------------ at-most-once


def test_at_most_once_job_is_not_retried_after_an_error(r):
    job_id = enqueue("once", {"fail": True})
    drain()
    assert job_hash(r, job_id)["status"] == "failed"
    assert len(runs(r, job_id)) == 1  # max_attempts=3, yet one delivery only


def test_at_most_once_job_whose_worker_died_is_marked_lost_never_rerun(r, redis_server):
    job_id = enqueue("once", {"sleep": 30}, queue="fast")
    victim = start_worker(redis_server.url, "--queue", "fast", "--worker-id", "victim")
    wait_for(lambda: runs(r, job_id), what="the job to start")
    stop(victim, signal.SIGKILL)
    r.hset("queue:worker:victim", "host", "elsewhere")
    time.sleep(1.3)  # the fast queue's lease
    result = get_queue("fast").sweep()
    assert result.dead_lettered == [job_id] and result.reclaimed == []
    data = job_hash(r, job_id, "fast")
    assert data["status"] == "lost" and "at-most-once" in data["last_error"]
    assert r.lrange("queue:fast:failed", 0, -1) == [job_id]
    assert r.llen("queue:fast:pending") == 0
    assert get_queue("fast").stats()["lost_total"] == 1


def test_at_least_once_is_the_default_and_the_same_crash_reruns_it(r):
    q = get_queue("fast")
    job_id = enqueue("add", {"a": 1, "b": 2}, queue="fast")
    q.claim_nowait("gone")
    time.sleep(1.3)
    assert q.sweep().reclaimed == [job_id]


def test_at_most_once_job_never_started_is_handed_back(r):
    """Moved by BLMOVE but never stamped: it never ran, so it is safe to hand out."""
    q = RedisJobQueue(r, "jobs", visibility_ms=100)
    job_id = q.enqueue({}, extra={"delivery": "at-most-once"})
    r.blmove("queue:jobs:pending", "queue:jobs:claiming", 1, "RIGHT", "LEFT")
    q.sweep()
    time.sleep(0.25)
    assert q.sweep().reclaimed == [job_id]


def test_at_most_once_running_job_is_lost_at_shutdown_not_handed_back(r, redis_server):
    job_id = enqueue("once", {"sleep": 30})
    proc = start_worker(redis_server.url, "--grace", "0.3")
    wait_for(lambda: runs(r, job_id), what="the job to start")
    code, _out, err = stop(proc)
    assert code == 0, err
    assert job_hash(r, job_id)["status"] == "lost"


def test_bad_delivery_mode():
    with pytest.raises(InvalidJobOptions, match="delivery must be one of"):
        enqueue("add", {}, delivery="exactly-once")


# -------------------------------------------------------- nack and dead letter


def test_nacks_and_redeliveries_are_two_counters(r):
    q = RedisJobQueue(r, "jobs", visibility_ms=100)
    job_id = q.enqueue({})
    q.requeue(q.claim_nowait("w"), count_attempt=False, event="nacked", counter="nacks")
    q.claim_nowait("w")
    time.sleep(0.15)
    q.sweep()
    data = job_hash(r, job_id)
    assert (data["nacks"], data["additional_deliveries"], data["attempts"]) == ("1", "1", "1")


def test_max_nacks_dead_letters(r):
    job_id = enqueue("nacker", {})
    drain()
    data = job_hash(r, job_id)
    assert data["status"] == "failed" and data["nacks"] == "3"
    assert "nacked 3 times (max_nacks=2): not ready" in data["last_error"]
    assert len(runs(r, job_id)) == 3


def test_max_deliveries_dead_letters_on_reclaim(r):
    q = get_queue("fast")
    job_id = enqueue("add", {"a": 1, "b": 1}, queue="fast", max_deliveries=1, max_attempts=10)
    for _ in range(2):
        q.claim_nowait("dies")
        time.sleep(1.3)
        result = q.sweep()
    assert result.dead_lettered == [job_id]
    assert "max_deliveries=1" in job_hash(r, job_id, "fast")["last_error"]


def test_dead_letter_is_never_trimmed_and_replays_keep_history(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 2, "MAX_ATTEMPTS": 1}})
    ids = [enqueue("boom", {"message": f"m{n}"}, max_attempts=1) for n in range(5)]
    drain()
    assert r.llen("queue:jobs:failed") == 5
    q = get_queue()
    assert q.replay([ids[0]]) == 1  # one
    assert q.replay(ids[1:3]) == 2  # a selection
    assert q.replay_failed() == 2  # all the rest
    assert r.llen("queue:jobs:failed") == 0
    data = job_hash(r, ids[0])
    assert data["status"] == "pending" and data["replays"] == "1" and data["attempts"] == "0"
    assert json.loads(data["errors"])[0]["error"] == "RuntimeError: m0"
    drain()
    assert len(json.loads(job_hash(r, ids[0])["errors"])) == 2  # the replay's failure joined the history


# ------------------------------------------------------------- fast ack, ttl


def test_keep_result_false_deletes_the_hash_and_history_entry(r):
    keep = enqueue("add", {"a": 1, "b": 1})
    fast = enqueue("add", {"a": 1, "b": 1}, keep_result=False)
    drain()
    assert job_hash(r, keep)["status"] == "completed"
    assert not r.exists(f"queue:jobs:job:{fast}")
    assert r.lrange("queue:jobs:completed", 0, -1) == [keep]
    assert get_queue().stats()["completed_total"] == 2


def test_ttl_drops_a_job_with_an_event(r):
    pubsub = r.pubsub()
    pubsub.subscribe("queue:jobs:events")
    job_id = enqueue("add", {"a": 1, "b": 1}, ttl=0.2)
    time.sleep(0.3)
    assert get_queue().sweep().expired == [job_id]
    events = []
    while (msg := pubsub.get_message(timeout=1)) is not None:
        if msg["type"] == "message":
            events.append(json.loads(msg["data"])["event"])
    pubsub.close()
    assert events == ["enqueued", "expired"]


# ------------------------------------------------------------------- pause


def test_pause_enqueue_claim_and_both(r):
    q = get_queue()
    assert q.pause("in") == "in"
    with pytest.raises(QueuePaused):
        enqueue("add", {"a": 1, "b": 1})
    with pytest.raises(QueuePaused):
        enqueue_many("add", [{"a": 1, "b": 1}])
    assert r.llen("queue:jobs:pending") == 0
    assert q.resume("in") == "none"
    job_id = enqueue("add", {"a": 1, "b": 1})
    assert q.pause("out") == "out"
    assert q.stats()["paused"] == "out"
    assert q.claim_nowait() is None
    assert q.claim(timeout_ms=100) is None
    assert drain().stats.processed == 0
    assert q.pause("in") == "all"
    assert q.resume("out") == "in"
    assert q.claim_nowait().id == job_id
    with pytest.raises(ValueError):
        q.pause("sideways")


def test_a_running_worker_respects_a_claim_pause_within_a_second(r, redis_server):
    q = get_queue()
    proc = start_worker(redis_server.url)
    try:
        first = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: job_hash(r, first)["status"] == "completed", what="the first job")
        q.pause("out")
        time.sleep(1.0)
        held = enqueue("add", {"a": 2, "b": 2})
        time.sleep(1.5)
        assert job_hash(r, held)["status"] == "pending"
        q.resume("out")
        wait_for(lambda: job_hash(r, held)["status"] == "completed", what="the job after resume")
    finally:
        stop(proc)


def test_a_blocked_claim_hands_the_job_back_if_the_queue_was_paused_meanwhile(r):
    from django_jobqueue.engine import scripts
    from django_jobqueue.engine.ids import new_claim_token

    q = get_queue()
    job_id = enqueue("add", {"a": 1, "b": 1})
    r.blmove("queue:jobs:pending", "queue:jobs:claiming", 1, "RIGHT", "LEFT")
    q.pause("out")
    res = scripts.get("stamp")(r, q._claim_keys(), [0, new_claim_token(), 1000, "w", job_id])
    assert res == ["paused"]
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id] and r.llen("queue:jobs:claiming") == 0


# -------------------------------------------------------------------- scan


def test_scan_iterates_a_state_with_a_cursor(r):
    ids = enqueue_many("add", [{"a": n, "b": 0} for n in range(250)])
    q = get_queue()
    seen, cursor = [], 0
    while True:
        cursor, page = q.scan("pending", cursor, count=100)
        seen += page
        if cursor == 0:
            break
    assert seen == ids  # oldest first, each once
    with pytest.raises(ValueError, match="unknown state"):
        q.scan("everything")


def test_scan_does_not_load_the_whole_list(r):
    pipe = r.pipeline(transaction=False)
    for n in range(0, 1_000_000, 10_000):
        pipe.rpush("queue:jobs:failed", *(f"{i:036d}" for i in range(n, n + 10_000)))
    pipe.execute()
    r.config_resetstat()
    cursor, page = get_queue().scan("failed", 500_000, count=50)
    assert len(page) == 50 and cursor == 500_050
    assert r.info("commandstats")["cmdstat_lrange"]["calls"] == 1


# ------------------------------------------------------------- replication


def test_enqueue_waits_for_a_replica(r, replica):
    job_id = enqueue("add", {"a": 1, "b": 1}, replicas=1, replication_timeout_ms=2000)
    rep = redis_py.Redis(port=replica.port, decode_responses=True)
    assert rep.hget(f"queue:jobs:job:{job_id}", "status") == "pending"  # already there: WAIT returned
    rep.close()
    ids = enqueue_many("add", [{"a": n, "b": 0} for n in range(10)], replicas=1)
    assert len(ids) == 10


def test_enqueue_raises_when_the_replica_is_down_and_the_job_stays(r, replica):
    replica.kill()
    with pytest.raises(ReplicationError) as info:
        enqueue("add", {"a": 1, "b": 1}, replicas=1, replication_timeout_ms=300)
    assert info.value.acknowledged == 0 and info.value.wanted == 1
    (job_id,) = info.value.job_ids
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]


def test_enqueue_many_raises_with_the_ids_it_wrote_when_the_replica_is_down(r, replica):
    replica.kill()
    with pytest.raises(ReplicationError) as info:
        enqueue_many("add", [{"a": n, "b": 0} for n in range(3)], replicas=1, replication_timeout_ms=300)
    assert info.value.acknowledged == 0
    assert info.value.job_ids == r.lrange("queue:jobs:pending", 0, -1)[::-1]  # all three, first first


def test_queue_default_replicas(r, replica, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"REPLICAS": 2, "REPLICATION_TIMEOUT_MS": 1500}})
    with pytest.raises(ReplicationError, match="only 1 of 2 replica"):
        enqueue("add", {"a": 1, "b": 1})
    enqueue("add", {"a": 1, "b": 1}, replicas=1)  # the call's value wins


# -------------------------------------------------------------- durability


def test_durability_check_warns_when_redis_keeps_nothing(r, settings):
    from django_jobqueue.checks import check_durability

    assert "keeps nothing on disk" in persistence_problem(r)
    settings.JOBQUEUE = {**settings.JOBQUEUE, "DURABLE": True}
    assert [w.id for w in check_durability()] == ["django_jobqueue.W001"]
    r.config_set("appendonly", "yes")
    try:
        wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, what="AOF")
        assert persistence_problem(r) is None
        assert check_durability() == []
    finally:
        r.config_set("appendonly", "no")


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_jobs_survive_a_sigkill_with_aof(fsync):
    server = RedisServer(["--appendonly", "yes", "--appendfsync", fsync]).start()
    try:
        client = redis_py.Redis(port=server.port, decode_responses=True)
        q = RedisJobQueue(client, "jobs")
        ids = q.enqueue_many([{"n": n} for n in range(2000)])
        for _ in range(500):
            q.complete(q.claim_nowait("w"), "done")
        if fsync == "everysec":
            time.sleep(1.5)  # what everysec promises: at most the last second is at risk
        server.restart(kill=True)
        client = redis_py.Redis(port=server.port, decode_responses=True)
        q = RedisJobQueue(client, "jobs")
        stats = q.stats()
        assert stats["pending_depth"] == 1500 and stats["completed_depth"] == 500  # within HISTORY (10 000)
        assert stats["completed_total"] == 500 and stats["enqueued_total"] == 2000
        assert all(client.exists(f"queue:jobs:job:{i}") for i in ids[500:])
        client.close()
    finally:
        server.cleanup()
