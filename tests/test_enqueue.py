"""enqueue(), enqueue_many() and @job, as a Django project uses them."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from django_jobqueue import (
    EnqueueVetoed,
    InvalidJobOptions,
    PayloadError,
    QueueUnavailable,
    UnknownJobError,
    UnknownQueueError,
    enqueue,
    enqueue_many,
    job,
)
from django_jobqueue.registry import get_definition, unregister
from tests.testapp.jobs import add


def keys_written(r):
    return sorted(r.keys("queue:*"))


@pytest.fixture
def temp_job():
    names = []

    def define(name, **options):
        @job(name=name, **options)
        def handler(payload, job):
            return payload

        names.append(name)
        return handler

    yield define
    for name in names:
        unregister(name)


def test_enqueue_by_name_function_and_method(r):
    a = enqueue("add", {"a": 1, "b": 2})
    b = enqueue(add, {"a": 3, "b": 4})
    c = add.enqueue({"a": 5, "b": 6})
    assert r.lrange("queue:jobs:pending", 0, -1) == [c, b, a]
    assert r.hget(f"queue:jobs:job:{a}", "name") == "add"


def test_jobs_py_modules_are_autodiscovered():
    assert get_definition("add").func is add


def test_name_defaults_to_the_dotted_path(temp_job):
    @job
    def report(payload, job):
        return None

    try:
        assert report.job_name == "tests.test_enqueue.test_name_defaults_to_the_dotted_path.<locals>.report"
    finally:
        unregister(report.job_name)


def test_django_encoder_types_are_stored_as_json(r):
    when = timezone.now()
    job_id = enqueue(
        "add",
        {"at": when, "price": decimal.Decimal("9.99"), "ref": uuid.UUID(int=1), "day": dt.date(2026, 1, 2)},
    )
    payload = json.loads(r.hget(f"queue:jobs:job:{job_id}", "payload"))
    assert payload["price"] == "9.99" and payload["day"] == "2026-01-02"
    assert payload["ref"] == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"f": object()}, "not JSON-encodable"),
        ({"b": b"bytes"}, "not JSON-encodable"),
        ({"x": math.nan}, "not JSON-encodable"),
        ({"x": math.inf}, "not JSON-encodable"),
        ({"s": "\ud800"}, "not valid Unicode"),
        ({1, 2}, "not JSON-encodable"),
    ],
)
def test_payloads_that_are_not_json_raise_and_write_nothing(r, payload, message):
    with pytest.raises(PayloadError, match=message):
        enqueue("add", payload)
    assert keys_written(r) == []


def test_deeply_nested_payload_raises_and_writes_nothing(r):
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(PayloadError, match="nested too deeply"):
        enqueue("add", deep)
    assert keys_written(r) == []


def test_nul_bytes_and_unicode_round_trip(r):
    job_id = enqueue("add", {"s": "a\x00b ünï 😀"})
    assert json.loads(r.hget(f"queue:jobs:job:{job_id}", "payload")) == {"s": "a\x00b ünï 😀"}


def test_payload_size_limit_exactly_at_and_one_byte_over(r, jobq_settings):
    jobq_settings(MAX_PAYLOAD_BYTES=100)
    at_limit = "x" * (100 - len('{"s":""}'))
    enqueue("add", {"s": at_limit})
    with pytest.raises(PayloadError, match="101 bytes as JSON, over the limit of 100"):
        enqueue("add", {"s": at_limit + "y"})
    assert r.llen("queue:jobs:pending") == 1


def test_unknown_job_name_raises_at_enqueue(r):
    with pytest.raises(UnknownJobError, match="'nope'"):
        enqueue("nope", {})
    assert keys_written(r) == []


def test_unknown_queue_raises(r):
    with pytest.raises(UnknownQueueError, match="'elsewhere'"):
        enqueue("add", {}, queue="elsewhere")
    assert keys_written(r) == []


def test_a_plain_function_is_not_a_job():
    def not_a_job(payload, job):
        return None

    with pytest.raises(InvalidJobOptions, match="not a job"):
        enqueue(not_a_job, {})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delay": -1}, "delay must be >= 0"),
        ({"delay": math.nan}, "finite"),
        ({"delay": "10"}, "number of seconds"),
        ({"delay": 5, "run_at": timezone.now()}, "not both"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "aware datetime"),
        ({"run_at": "tomorrow"}, "must be a datetime"),
        ({"ttl": 0}, "ttl must be > 0"),
        ({"ttl": -5}, "ttl must be > 0"),
        ({"ttl": 10, "delay": 20}, "longer than the delay"),
        ({"max_attempts": 0}, "from 1 to"),
        ({"max_attempts": 10**9}, "from 1 to"),
        ({"max_attempts": True}, "from 1 to"),
        ({"unique_key": "x" * 201}, "at most 200"),
        ({"unique_key": "a\nb"}, "printable"),
        ({"on_commit": "yes"}, "True or False"),
        ({"retries": 3}, "unknown option"),
        ({"queue": ""}, "queue must be"),
    ],
)
def test_bad_options_raise_a_clear_error_and_write_nothing(r, options, message):
    with pytest.raises(InvalidJobOptions, match=message):
        enqueue("add", {}, **options)
    assert keys_written(r) == []


def test_delay_and_run_at_schedule_the_job(r):
    a = enqueue("add", {}, delay=30)
    b = enqueue("add", {}, delay=dt.timedelta(minutes=1))
    c = enqueue("add", {}, run_at=timezone.now() + dt.timedelta(hours=1))
    now_ms = timezone.now().timestamp() * 1000
    scores = dict(r.zrange("queue:jobs:scheduled", 0, -1, withscores=True))
    assert abs(scores[a] - now_ms - 30_000) < 2000
    assert abs(scores[b] - now_ms - 60_000) < 2000
    assert abs(scores[c] - now_ms - 3_600_000) < 2000
    assert r.llen("queue:jobs:pending") == 0


def test_run_at_in_the_past_runs_now(r):
    job_id = enqueue("add", {}, run_at=timezone.now() - dt.timedelta(hours=1))
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]


def test_ttl_max_attempts_and_queue_options_are_stored(r):
    job_id = enqueue("add", {}, ttl=3600, max_attempts=7, queue="high")
    h = r.hgetall(f"queue:high:job:{job_id}")
    assert h["max_attempts"] == "7" and "expires_at_ms" in h
    assert r.lrange("queue:high:pending", 0, -1) == [job_id]


def test_definition_defaults_apply_and_calls_override(r, temp_job):
    temp_job("defaults", queue="low", max_attempts=5, ttl=60)
    job_id = enqueue("defaults", {})
    h = r.hgetall(f"queue:low:job:{job_id}")
    assert h["max_attempts"] == "5"
    job_id = enqueue("defaults", {}, queue="high", max_attempts=2)
    assert r.hget(f"queue:high:job:{job_id}", "max_attempts") == "2"


def test_unique_key_returns_the_first_jobs_id(r):
    first = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:42")
    assert enqueue("add", {"a": 2, "b": 2}, unique_key="invoice:42") == first
    assert r.llen("queue:jobs:pending") == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_writes_only_when_the_transaction_commits(r):
    with transaction.atomic():
        job_id = enqueue("add", {"a": 1, "b": 2}, on_commit=True)
        assert r.llen("queue:jobs:pending") == 0
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]

    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue("add", {}, on_commit=True)
        raise RuntimeError("rolled back")
    assert r.llen("queue:jobs:pending") == 1


def test_preflight_on_before_add_can_veto(r, temp_job):
    seen = []

    def only_paid(job_to_add, queue_name):
        seen.append((job_to_add["name"], queue_name))
        return job_to_add["payload"].get("plan") == "paid"

    temp_job("premium", preflight={"on_before_add": only_paid})
    enqueue("premium", {"plan": "paid"})
    with pytest.raises(EnqueueVetoed):
        enqueue("premium", {"plan": "free"})
    assert r.llen("queue:jobs:pending") == 1
    assert seen == [("premium", "jobs"), ("premium", "jobs")]


def test_enqueue_many_is_pipelined_and_checks_every_payload_first(r):
    ids = enqueue_many("add", [{"a": n, "b": n} for n in range(50_000)])
    assert len(ids) == 50_000
    assert r.llen("queue:jobs:pending") == 50_000
    r.flushall()
    with pytest.raises(PayloadError):
        enqueue_many("add", [{"a": 1}, {"bad": object()}])
    assert keys_written(r) == []


def test_enqueue_many_with_options(r):
    ids = enqueue_many("add", [{}, {}], queue="low", delay=10, max_attempts=9)
    assert r.zcard("queue:low:scheduled") == 2
    assert r.hget(f"queue:low:job:{ids[0]}", "max_attempts") == "9"
    with pytest.raises(InvalidJobOptions, match="unique_key"):
        enqueue_many("add", [{}], unique_key="x")


def test_redis_unreachable_raises_queue_unavailable_within_a_bounded_time(jobq_settings):
    import time

    from django_jobqueue.devserver import free_port

    jobq_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CONNECT_TIMEOUT=0.5, SOCKET_TIMEOUT=0.5)
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="could not enqueue job 'add'"):
        enqueue("add", {})
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_attempts": 0}, "from 1 to"),
        ({"delay": 5}, "per enqueue"),
        ({"preflight": {"okay": print}}, "unknown preflight"),
        ({"preflight": {"okay_to_run": "yes"}}, "must be callable"),
        ({"requeue_on_failure": "yes"}, "True or False"),
        ({"on_max_attempts_exhausted": 3}, "callable"),
        ({"name": ""}, "non-empty"),
        ({"name": "has space"}, "whitespace"),
        ({"name": "x" * 201}, "longer than"),
    ],
)
def test_bad_job_definitions_raise_at_import(options, message):
    with pytest.raises(InvalidJobOptions, match=message):

        @job(**{"name": "broken", **options})
        def broken(payload, job):
            return None


def test_two_functions_cannot_share_a_name(temp_job):
    temp_job("shared")
    with pytest.raises(InvalidJobOptions, match="already used"):

        @job(name="shared")
        def other(payload, job):
            return None


@pytest.mark.django_db(transaction=True)
def test_on_commit_with_a_unique_key_held_at_call_time_returns_the_holder(r):
    holder = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:42")
    with transaction.atomic():
        # As without on_commit: the unfinished holder stands for this job.
        assert enqueue("add", {"a": 2, "b": 2}, unique_key="invoice:42", on_commit=True) == holder
        assert transaction.get_connection().run_on_commit == []  # nothing deferred
    assert r.lrange("queue:jobs:pending", 0, -1) == [holder]
    # Outside a transaction the write happens at once, and says who holds the key.
    assert enqueue("add", {}, unique_key="invoice:42", on_commit=True) == holder
    assert r.lrange("queue:jobs:pending", 0, -1) == [holder]


@pytest.mark.django_db(transaction=True)
def test_on_commit_with_a_unique_key_taken_before_the_commit_warns(r, caplog):
    with transaction.atomic():
        job_id = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:42", on_commit=True)
        # Another request takes the key (without on_commit) before this transaction commits.
        other = enqueue("add", {"a": 2, "b": 2}, unique_key="invoice:42")
        assert other != job_id
    # One holder, one job: the job id returned above never exists, and the log says so.
    assert r.lrange("queue:jobs:pending", 0, -1) == [other]
    assert not r.exists(f"queue:jobs:job:{job_id}")
    (warning,) = [rec for rec in caplog.records if rec.levelname == "WARNING" and job_id in rec.getMessage()]
    assert f"unique key 'invoice:42' is held by unfinished job {other}" in warning.getMessage()


@pytest.mark.django_db(transaction=True)
def test_on_commit_with_a_free_unique_key_adds_the_returned_id_at_commit(r):
    with transaction.atomic():
        job_id = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:42", on_commit=True)
        assert r.llen("queue:jobs:pending") == 0
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert r.hget("queue:jobs:unique", "invoice:42") == job_id
