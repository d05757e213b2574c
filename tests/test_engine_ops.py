"""The by-id operations (queue_ops.py) against what a job's hash says: requeue
now of an at-most-once job, replay and unique keys, deleting dead-lettered
jobs, and the lifetime of expired jobs' hashes."""

from __future__ import annotations

import time

import pytest

from django_jobqueue import enqueue, get_queue
from django_jobqueue.conf import get_settings
from django_jobqueue.engine import queue_ops
from django_jobqueue.queue import Outcome, RedisJobQueue
from tests.helpers.redis_data import job_hash

A_DAY = 86_400  # the default lifetime of an expired job's hash


# ------------------------------------------------- requeue now, at-most-once


def test_requeue_now_refuses_a_running_at_most_once_job_and_changes_nothing(r):
    q = get_queue("jobs")
    job_id = enqueue("once", {})
    claimed = q.claim_nowait("w1")
    assert claimed.id == job_id
    before = job_hash(r, job_id)

    outcome = q.requeue_now(job_id)
    assert job_hash(r, job_id) == before  # still running, on its claim
    assert r.lrange("queue:jobs:processing", 0, -1) == [job_id]
    assert r.zscore("queue:jobs:leases", job_id) is not None
    assert r.llen("queue:jobs:pending") == 0
    assert q.claim_nowait("w2") is None  # never handed out a second time
    assert outcome is queue_ops.Refusal.AT_MOST_ONCE_RUNNING and not outcome
    assert q.complete(claimed, "done")  # its worker still finishes it


def test_requeue_now_still_moves_an_at_most_once_job_that_has_not_started(r):
    q = get_queue("jobs")
    later = enqueue("once", {}, delay=600)
    assert q.requeue_now(later) is Outcome.OK
    assert job_hash(r, later)["status"] == "pending"


# --------------------------------------------------- replay and unique keys


def _dead(q: RedisJobQueue, unique_key: str) -> str:
    """A job holding ``unique_key``, dead-lettered (which frees the key)."""
    job_id = enqueue("add", {"a": 1, "b": 1}, unique_key=unique_key)
    claimed = q.claim_nowait("w1")
    assert claimed.id == job_id and q.fail(claimed, "boom", terminal=True)
    return job_id


def test_replay_is_refused_while_another_unfinished_job_holds_the_unique_key(r):
    q = get_queue("jobs")
    dead = _dead(q, "invoice:42")
    holder = enqueue("add", {"a": 2, "b": 2}, unique_key="invoice:42")
    assert holder != dead

    outcome = q.retry(dead)
    assert q.replay([dead]) == 0
    assert q.replay_failed() == 0
    assert job_hash(r, dead)["status"] == "failed" and r.lrange("queue:jobs:failed", 0, -1) == [dead]
    assert r.hget("queue:jobs:unique", "invoice:42") == holder
    assert r.lrange("queue:jobs:pending", 0, -1) == [holder]  # one holder, one job to run
    assert outcome is queue_ops.Refusal.UNIQUE_KEY_HELD and not outcome
    report = q.replay_dead_letter()
    assert (report.replayed, report.refused) == (0, [dead])


def test_a_replayed_job_takes_its_free_unique_key_again(r):
    q = get_queue("jobs")
    dead = _dead(q, "invoice:42")
    assert r.hget("queue:jobs:unique", "invoice:42") is None
    assert q.retry(dead) is Outcome.OK
    assert r.hget("queue:jobs:unique", "invoice:42") == dead
    assert enqueue("add", {}, unique_key="invoice:42") == dead  # the key is held again


def test_replay_takes_a_unique_key_whose_holder_has_finished(r):
    q = get_queue("jobs")
    dead = _dead(q, "invoice:42")
    # A key left pointing at a job that is gone (or finished) is free, as enqueue sees it.
    r.hset("queue:jobs:unique", "invoice:42", "f" * 36)
    assert q.replay([dead]) == 1
    assert r.hget("queue:jobs:unique", "invoice:42") == dead


def test_replay_failed_replays_what_it_can_and_reports_the_rest(r):
    q = get_queue("jobs")
    blocked = _dead(q, "invoice:1")
    free = _dead(q, "invoice:2")
    holder = enqueue("add", {}, unique_key="invoice:1")
    assert q.replay_failed() == 1
    assert job_hash(r, free)["status"] == "pending" and job_hash(r, blocked)["status"] == "failed"
    assert r.hget("queue:jobs:unique", "invoice:1") == holder
    assert r.hget("queue:jobs:unique", "invoice:2") == free
    report = q.replay_dead_letter()  # what is left: refused, and said so
    assert (report.replayed, report.refused) == (0, [blocked])


# ------------------------------------------------ deleting dead-lettered jobs


@pytest.mark.parametrize("how", ["lost", "failed"])
def test_deleting_a_dead_lettered_job_takes_it_off_the_failed_list(r, how):
    q = get_queue("jobs")
    job_id = enqueue("once", {})
    claimed = q.claim_nowait("w1")
    assert q.fail_outcome(claimed, "x", lost=how == "lost", terminal=True) is Outcome.FAILED
    assert job_hash(r, job_id)["status"] == how
    assert r.lrange("queue:jobs:failed", 0, -1) == [job_id] and q.stats()["failed_depth"] == 1

    assert q.delete(job_id) is Outcome.OK
    assert not r.exists(f"queue:jobs:job:{job_id}")
    assert r.llen("queue:jobs:failed") == 0 and q.stats()["failed_depth"] == 0


# ------------------------------------------------- expired jobs' hashes


def _expiring(n: int = 1) -> list[str]:
    ids = [enqueue("add", {"a": i, "b": 0}, ttl=0.05) for i in range(n)]
    time.sleep(0.1)
    return ids


def _lifetimes(r, ids: list[str]) -> list[int]:
    return [r.ttl(f"queue:jobs:job:{i}") for i in ids]


def test_jobs_expired_by_the_sweep_get_a_lifetime_by_default(r):
    ids = _expiring(200)
    assert sorted(get_queue("jobs").sweep(limit=1000).expired) == sorted(ids)
    assert {job_hash(r, i)["status"] for i in ids} == {"expired"}
    assert all(0 < ttl <= A_DAY for ttl in _lifetimes(r, ids))  # none kept forever
    assert get_settings().queue("jobs").expired_after_seconds == A_DAY  # tests/settings.py sets none


def test_jobs_expired_at_claim_get_a_lifetime_by_default(r):
    q = get_queue("jobs")
    (one,) = _expiring()
    assert q.claim_nowait("w1") is None
    more = _expiring(3)
    assert q.claim_many(10, "w1") == []
    for job_id in [one, *more]:
        assert job_hash(r, job_id)["status"] == "expired"
    assert all(0 < ttl <= A_DAY for ttl in _lifetimes(r, [one, *more]))


def test_the_expired_lifetime_follows_the_cleanup_setting(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"CLEANUP": {"EXPIRED_AFTER_SECONDS": 60}}})
    ids = _expiring(2)
    get_queue("jobs").sweep()
    assert all(0 < ttl <= 60 for ttl in _lifetimes(r, ids))

    jobq_settings(QUEUES={"jobs": {"CLEANUP": {"EXPIRED_AFTER_SECONDS": None}}})
    ids = _expiring(2)
    get_queue("jobs").sweep()
    assert _lifetimes(r, ids) == [-1, -1]  # None keeps them, as asked


@pytest.mark.parametrize(("failed_ttl_s", "at_most"), [(None, A_DAY), (600, 600)])
def test_the_engine_alone_gives_expired_hashes_a_lifetime(r, failed_ttl_s, at_most):
    """Made by hand, without the setting: as failed jobs' hashes when those
    have a lifetime, else the default one."""
    q = RedisJobQueue(r, "jobs", failed_ttl_s=failed_ttl_s)
    job_id = q.enqueue({}, ttl_ms=50)
    time.sleep(0.1)
    assert q.sweep().expired == [job_id]
    lifetime = r.ttl(f"queue:jobs:job:{job_id}")
    assert lifetime > 0  # not kept forever
    assert lifetime <= at_most


# ------------------------------------------------------------------ stats


def _server_ms(r) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_the_oldest_pending_age_is_measured_on_the_server_clock(r, monkeypatch):
    """Jobs are stamped with the Redis server's clock; the machine reading the
    stats may be an hour off (no NTP, a laptop): the age must not show it."""
    q = RedisJobQueue(r, "jobs")
    assert q.stats()["oldest_pending_age_ms"] is None
    q.enqueue({})
    time.sleep(0.05)
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() + 3600)  # this machine's clock, an hour fast
        age = q.stats()["oldest_pending_age_ms"]
    assert 50 <= age < 5_000, age


def test_the_oldest_pending_age_follows_a_queue_clock(r):
    """A queue given a clock stamps its jobs with it: their age is read on it
    too, not on this machine's clock (here an hour behind the queue's)."""
    now = [_server_ms(r) - 3_600_000]
    q = RedisJobQueue(r, "jobs", clock=lambda: now[0])
    job_id = q.enqueue({})
    assert int(r.hget(f"queue:jobs:job:{job_id}", "enqueued_at_ms")) == now[0]
    assert q.stats()["oldest_pending_age_ms"] == 0
    now[0] += 5_000
    assert q.stats()["oldest_pending_age_ms"] == 5_000
