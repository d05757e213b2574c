"""Finished jobs are kept by count as well as by time (HISTORY, FAILED_HISTORY):
a job that leaves its list takes its hash with it, dropped dead letters are
counted and logged, and the memory the kept jobs hold is shown and checked
against Redis maxmemory."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from django_jobqueue import checks, enqueue, get_queue
from django_jobqueue.engine import browse
from django_jobqueue.queue import Outcome
from django_jobqueue.worker import Worker
from tests.helpers.admin import OVERVIEW


def finished_hashes(r, status: str, queue: str = "jobs") -> set[str]:
    """Ids of the job hashes of this queue whose status is ``status``."""
    found = set()
    for key in r.scan_iter(f"queue:{queue}:job:*", count=1000):
        if r.hget(key, "status") == status:
            found.add(key.rsplit(":", 1)[1])
    return found


def complete_all(q, n: int, batch: int = 1) -> list[str]:
    """Enqueue ``n`` jobs and complete them, ``batch`` per complete.lua call."""
    ids = q.enqueue_many([{"n": i} for i in range(n)])
    while claimed := q.claim_many(batch, "w1"):
        assert q.complete_many([(job, {"n": job.payload["n"]}, True) for job in claimed]) == [Outcome.OK] * len(claimed)
    return ids


@pytest.fixture
def small_history(jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 5}})
    return get_queue("jobs")


@pytest.fixture
def bounded(jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 5, "FAILED_HISTORY": 3, "MAX_ATTEMPTS": 1}})
    return get_queue("jobs")


# ------------------------------------------------------------- completed


@pytest.mark.parametrize("batch", [1, 4])
def test_completing_past_history_deletes_the_hashes_that_leave_the_list(r, small_history, batch):
    ids = complete_all(small_history, 23, batch)
    kept = r.lrange("queue:jobs:completed", 0, -1)
    assert kept == list(reversed(ids))[:5]  # the newest five, newest first
    assert finished_hashes(r, "completed") == set(kept)
    assert not any(r.exists(f"queue:jobs:job:{i}") for i in ids[:-5])
    assert get_queue().stats()["completed_total"] == 23  # counted, whatever is kept
    assert r.ttl(f"queue:jobs:job:{ids[-1]}") > 0  # the time bound still applies too


def test_a_worker_keeps_at_most_history_completed_jobs(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 20, "CONCURRENT_JOBS": 4}})
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(150)]
    Worker(["jobs"], burst=True).run(install_signals=False)
    assert r.llen("queue:jobs:completed") == 20
    assert finished_hashes(r, "completed") == set(r.lrange("queue:jobs:completed", 0, -1))
    assert sum(1 for i in ids if r.exists(f"queue:jobs:job:{i}")) == 20


def test_history_zero_keeps_no_completed_job(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 0}})
    ids = complete_all(get_queue(), 3)
    assert r.llen("queue:jobs:completed") == 0
    assert not any(r.exists(f"queue:jobs:job:{i}") for i in ids)
    assert get_queue().stats()["completed_total"] == 3


def test_history_none_keeps_every_completed_job_until_cleanup(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": None}})
    ids = complete_all(get_queue(), 30, batch=8)
    get_queue().sweep()
    assert r.llen("queue:jobs:completed") == 30
    assert finished_hashes(r, "completed") == set(ids)


def test_a_lowered_history_is_caught_up_by_the_sweep_a_bounded_step_at_a_time(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 100}})
    ids = complete_all(get_queue(), 40, batch=10)
    jobq_settings(QUEUES={"jobs": {"HISTORY": 10}})
    q = get_queue()
    q.sweep(limit=25)
    assert r.llen("queue:jobs:completed") == 15  # at most `limit` off per sweep
    q.sweep(limit=25)
    assert r.lrange("queue:jobs:completed", 0, -1) == list(reversed(ids))[:10]
    assert finished_hashes(r, "completed") == set(ids[-10:])


def test_an_id_whose_hash_now_names_another_job_loses_only_its_entry(r, small_history):
    """An id left on the list after CLEANUP expired its hash, reused by a
    caller for a new job: trimming the old entry must not delete the new job."""
    q = small_history
    (old,) = complete_all(q, 1)
    r.delete(f"queue:jobs:job:{old}")  # as CLEANUP's EXPIRE would
    assert q.enqueue({"again": True}, job_id=old, delay_ms=60_000) == old
    complete_all(q, 6)
    assert old not in r.lrange("queue:jobs:completed", 0, -1)
    assert r.hget(f"queue:jobs:job:{old}", "status") == "scheduled"


# ------------------------------------------------------------ dead letters


def dead_letter(q, n: int) -> list[str]:
    ids = q.enqueue_many([{"n": i} for i in range(n)])
    for _ in ids:
        assert q.fail(q.claim_nowait("w1"), "boom")
    return ids


def test_the_sweep_drops_dead_letters_past_failed_history_counted_and_logged(r, bounded, caplog):
    q = bounded
    ids = dead_letter(q, 8)
    assert r.llen("queue:jobs:failed") == 8  # failing adds no work to the hot path: the sweep trims
    with caplog.at_level(logging.WARNING, logger="django_jobqueue"):
        q.sweep()
    assert r.lrange("queue:jobs:failed", 0, -1) == list(reversed(ids))[:3]
    assert finished_hashes(r, "failed") == set(ids[-3:])
    assert not any(r.exists(f"queue:jobs:job:{i}") for i in ids[:5])
    stats = q.stats()
    assert stats["dropped_failed_total"] == 5 and stats["failed_total"] == 8
    (record,) = [rec for rec in caplog.records if "dead letter" in rec.getMessage()]
    assert "5 dead letter(s) dropped" in record.getMessage() and ids[0] in record.getMessage()
    q.sweep()
    assert q.stats()["dropped_failed_total"] == 5  # nothing more past the bound


def test_dead_letters_are_dropped_at_most_limit_per_sweep(r, bounded):
    q = bounded
    dead_letter(q, 10)
    q.sweep(limit=4)
    assert r.llen("queue:jobs:failed") == 6
    q.sweep(limit=4)
    assert r.llen("queue:jobs:failed") == 3
    assert q.stats()["dropped_failed_total"] == 7


def test_failed_history_none_keeps_every_dead_letter(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"FAILED_HISTORY": None, "MAX_ATTEMPTS": 1}})
    q = get_queue()
    dead_letter(q, 12)
    q.sweep()
    assert r.llen("queue:jobs:failed") == 12 and q.stats()["dropped_failed_total"] == 0


def test_the_defaults_bound_both_lists():
    from django_jobqueue.conf import validate

    settings, errors = validate({})
    assert errors == []
    qs = settings.queue()
    assert (qs.history, qs.failed_history) == (10_000, 10_000)
    assert checks.check_retention_bounds() == []


# ------------------------------------------------------------------ checks


def test_a_none_bound_is_a_warning_naming_the_key(jobq_settings):
    jobq_settings(
        QUEUES={
            "jobs": {"HISTORY": None},
            "low": {"FAILED_HISTORY": None, "CLEANUP": {"FAILED_AFTER_SECONDS": None}},
        }
    )
    warnings = checks.check_retention_bounds()
    assert [w.id for w in warnings] == ["django_jobqueue.W003"] * 2
    assert "['jobs']['HISTORY'] is None" in warnings[0].msg and "x 3600 s x bytes per job" in warnings[0].msg
    assert "['low']['FAILED_HISTORY'] is None" in warnings[1].msg and "until purged" in warnings[1].msg


@pytest.fixture
def maxmemory(r):
    """Set the private server's maxmemory for one test (0 again after)."""

    def set_to(value: int) -> None:
        r.config_set("maxmemory", value)

    yield set_to
    r.config_set("maxmemory", 0)


def test_the_deploy_check_warns_when_the_bounds_do_not_fit_maxmemory(r, jobq_settings, maxmemory):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 50_000}, "low": {}})
    complete_all(get_queue(), 20, batch=10)  # something to measure
    assert checks.check_retention_memory() == []  # no maxmemory: nothing to fit
    maxmemory(64 * 1024 * 1024)
    (warning,) = checks.check_retention_memory()
    assert warning.id == "django_jobqueue.W004"
    assert "over 50% of Redis maxmemory (64.0 MiB)" in warning.msg
    assert "jobs: 50,000 completed x " in warning.msg and "low: 10,000 completed x 1.0 KiB" in warning.msg
    maxmemory(1024 * 1024 * 1024)
    assert checks.check_retention_memory() == []


def test_the_deploy_check_says_nothing_when_redis_is_away(jobq_settings):
    jobq_settings(REDIS_URL="redis://127.0.0.1:1/0", CONNECT_TIMEOUT=0.2)
    assert checks.check_retention_memory() == []


def test_the_memory_checks_run_with_check_deploy(jobq_settings, maxmemory, capsys):
    from django.core import checks as django_checks

    jobq_settings(QUEUES={"jobs": {"HISTORY": 100_000}})
    maxmemory(32 * 1024 * 1024)
    ids = [m.id for m in django_checks.run_checks(include_deployment_checks=True)]
    assert "django_jobqueue.W004" in ids
    assert "django_jobqueue.W004" not in [m.id for m in django_checks.run_checks()]


# ---------------------------------------------------------- what is shown


def test_retained_memory_measures_the_hashes_kept(r, bounded):
    complete_all(bounded, 5)
    dead_letter(bounded, 2)
    lists = browse.retained_memory(bounded)
    done, dead = lists["completed"], lists["failed"]
    assert (done.depth, done.bound, done.sampled) == (5, 5, 5)
    usage = [r.memory_usage(f"queue:jobs:job:{i}", samples=0) for i in r.lrange("queue:jobs:completed", 0, -1)]
    assert done.job_bytes == sum(usage) // 5 + browse.ENTRY_BYTES
    assert done.held_bytes == 5 * done.job_bytes and done.bound_bytes == 5 * done.job_bytes
    assert (dead.depth, dead.bound, dead.sampled) == (2, 3, 2)


def test_jobq_stats_prints_the_memory_held_by_kept_jobs(r, bounded):
    complete_all(bounded, 7)
    out = StringIO()
    call_command("jobq_stats", stdout=out)
    text = out.getvalue()
    assert "memory held by finished jobs (an estimate" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("jobs ") and " of " in ln)
    assert "(5 of 5 x " in line and "(0 of 3 x 2.0 KiB assumed)" in line
    assert "Redis maxmemory: none" in text

    out = StringIO()
    call_command("jobq_stats", "--json", stdout=out)
    data = json.loads(out.getvalue())
    memory = data["queues"]["jobs"]["retained_memory"]
    assert memory["estimate"] is True and memory["completed"]["depth"] == 5 and memory["completed"]["sampled"] == 5
    assert memory["bytes"] == memory["completed"]["bytes"] + memory["failed"]["bytes"] > 0
    assert data["maxmemory"] is None


def test_jobq_stats_warns_when_the_bounds_do_not_fit(r, jobq_settings, maxmemory):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 100_000}})
    maxmemory(16 * 1024 * 1024)
    out = StringIO()
    call_command("jobq_stats", stdout=out)
    assert "Redis maxmemory 16.0 MiB" in out.getvalue() and "warning: the finished jobs" in out.getvalue()


@pytest.mark.django_db
def test_the_admin_shows_kept_memory_and_warns_when_it_cannot_fit(r, jobq_settings, maxmemory, admin_user):
    jobq_settings(QUEUES={"jobs": {"HISTORY": 100_000}})
    complete_all(get_queue(), 3)
    client = Client()
    client.force_login(admin_user)
    page = client.get(OVERVIEW).content.decode()
    assert "Kept jobs" in page and "estimate" in page
    assert "jq-retention-warning" not in page
    maxmemory(16 * 1024 * 1024)
    page = client.get(OVERVIEW).content.decode()
    assert "jq-retention-warning" in page and "over 50% of Redis maxmemory (16.0 MiB)" in page


def test_by_default_the_sweep_keeps_ten_thousand_dead_letters(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"MAX_ATTEMPTS": 1}})
    q = get_queue()
    ids = q.enqueue_many([{"n": i} for i in range(10_004)])
    while claimed := q.claim_many(500, "w1"):
        for job in claimed:
            q.fail(job, "boom")
    q.sweep()
    assert r.llen("queue:jobs:failed") == 10_000
    assert not any(r.exists(f"queue:jobs:job:{i}") for i in ids[:4])
    assert r.hget(f"queue:jobs:job:{ids[4]}", "status") == "failed"
    assert q.stats()["dropped_failed_total"] == 4
