"""aenqueue() and aenqueue_many() (issue 25, point 1): enqueue() for asyncio
code, on the running loop's own redis.asyncio client. The same arguments,
checks, errors and writes as enqueue(); a client per event loop (a loop per
test here: asyncio.run), several loops at once; an ASGI view."""

from __future__ import annotations

import asyncio
import gc
import json
import threading

import pytest
import redis.connection
from asgiref.sync import async_to_sync
from django.db import transaction
from django.test import AsyncClient

from django_jobqueue import (
    InvalidJobOptions,
    PayloadError,
    QueuePaused,
    QueueUnavailable,
    ReplicationError,
    UnknownJobError,
    aenqueue,
    aenqueue_many,
    async_connection,
    enqueue,
    get_queue,
)
from django_jobqueue.async_connection import get_async_client
from tests.helpers.redis_data import job_hash
from tests.helpers.workers import drain
from tests.testapp.jobs import runs


def test_an_awaited_enqueue_writes_the_job_enqueue_would(r):
    job_id = asyncio.run(aenqueue("add", {"a": 1, "b": 2}, max_attempts=2, ttl=60))

    fields = job_hash(r, job_id)
    twin = job_hash(r, enqueue("add", {"a": 1, "b": 2}, max_attempts=2, ttl=60))
    assert fields["status"] == "pending" and fields["payload"] == twin["payload"]
    assert set(fields) == set(twin)
    drain()
    assert json.loads(job_hash(r, job_id)["result"]) == {"sum": 3} and runs(r, job_id)


def test_a_unique_key_held_returns_its_holder(r):
    async def twice():
        return await aenqueue("add", {"a": 1, "b": 1}, unique_key="k"), await aenqueue("add", {}, unique_key="k")

    first, second = asyncio.run(twice())
    assert first == second and r.llen(get_queue("jobs").keys.pending) == 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: aenqueue("no-such-job", {}), UnknownJobError),
        (lambda: aenqueue("add", {"x": object()}), PayloadError),
        (lambda: aenqueue("add", {}, ttl=-1), InvalidJobOptions),
        (lambda: aenqueue("add", {}, queue="nowhere"), Exception),
        (lambda: aenqueue_many("add", [{}, {"x": {1, 2}}]), PayloadError),
        (lambda: aenqueue_many("add", [{}], unique_key="k"), InvalidJobOptions),
    ],
)
def test_bad_input_is_the_error_enqueue_raises_and_writes_nothing(r, call, error):
    with pytest.raises(error):
        asyncio.run(call())
    assert r.keys("queue:*:job:*") == []


def test_a_paused_queue_refuses_an_awaited_enqueue(r):
    get_queue("jobs").pause("in")
    with pytest.raises(QueuePaused):
        asyncio.run(aenqueue("add", {}))
    with pytest.raises(QueuePaused):
        asyncio.run(aenqueue_many("add", [{}, {}]))


def test_redis_away_is_a_queue_unavailable(jobq_settings):
    jobq_settings(REDIS_URL="redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable, match="could not enqueue job 'add'"):
        asyncio.run(aenqueue("add", {}))


def test_an_awaited_bulk_enqueue_keeps_order_and_checks_every_payload_first(r):
    ids = asyncio.run(aenqueue_many("add", [{"a": n, "b": 0} for n in range(250)]))

    assert len(ids) == len(set(ids)) == 250
    assert r.lrange(get_queue("jobs").keys.pending, 0, -1)[::-1] == ids


def test_fifty_concurrent_callers_on_one_loop(r):
    async def fifty():
        return await asyncio.gather(*(aenqueue("add", {"a": n, "b": 0}) for n in range(50)))

    ids = asyncio.run(fifty())
    assert len(set(ids)) == 50 and r.llen(get_queue("jobs").keys.pending) == 50


def test_each_event_loop_has_a_client_of_its_own(r):
    """Loops in two threads at once, and a loop after another: each uses a
    client bound to itself (a client of another loop would fail)."""
    seen: dict[str, object] = {}
    errors: list[BaseException] = []

    def in_a_thread(name: str) -> None:
        async def work():
            seen[name] = await get_async_client()
            return await aenqueue_many("add", [{"a": n, "b": 0} for n in range(20)])

        try:
            asyncio.run(work())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=in_a_thread, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    in_a_thread("c")
    assert errors == []
    assert len({id(c) for c in seen.values()}) == 3
    assert r.llen(get_queue("jobs").keys.pending) == 60


def test_replicas_are_waited_for(r, replica):
    job_id = asyncio.run(aenqueue("add", {}, replicas=1))
    assert job_hash(r, job_id)["status"] == "pending"
    with pytest.raises(ReplicationError) as caught:
        asyncio.run(aenqueue("add", {}, replicas=2, replication_timeout_ms=100))
    (written,) = caught.value.job_ids
    assert job_hash(r, written)["status"] == "pending"  # written all the same, as enqueue() does


def test_on_commit_from_async_code_writes_at_once(r):
    job_id = asyncio.run(aenqueue("add", {}, on_commit=True))
    assert job_hash(r, job_id)["status"] == "pending"


@pytest.mark.django_db
def test_an_async_view_enqueues(r):
    response = asyncio.run(AsyncClient().get("/async-signup/?b=5"))
    job_id = response.json()["job"]
    drain()
    assert json.loads(job_hash(r, job_id)["result"]) == {"sum": 6}


def test_no_synchronous_connection_is_used(r, monkeypatch):
    """No thread hop: the writes go out on the loop's redis.asyncio client."""
    get_queue("jobs")  # the engine's queue object, made (without any I/O) before the guard

    def no_sync_io(*args, **kwargs):
        raise AssertionError("a synchronous Redis connection was used from async code")

    async def both():
        return await aenqueue("add", {}), await aenqueue_many("add", [{}, {}])

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", no_sync_io)
    one, many = asyncio.run(both())
    monkeypatch.undo()
    assert r.llen(get_queue("jobs").keys.pending) == 3 and len(many) == 2 and one


def test_a_loops_client_is_forgotten_with_the_loop(r):
    for _ in range(5):
        asyncio.run(aenqueue("add", {}))
    gc.collect()
    assert len(async_connection._clients) == 0


# Its connections are left to the garbage collector, which warns of them: the
# loop's closer never ran (docs/async.md says so).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_loop_closed_without_finalizing_its_client_is_forgotten_at_the_next_one(r):
    loop = asyncio.new_event_loop()
    loop.run_until_complete(aenqueue("add", {}))
    loop.close()  # no shutdown_asyncgens(): the client's closer never ran
    asyncio.run(aenqueue("add", {}))
    assert loop not in async_connection._clients
    assert r.llen(get_queue("jobs").keys.pending) == 2
    gc.collect()  # its connections' warnings, here rather than in another test


@pytest.mark.django_db(transaction=True)
def test_on_commit_from_async_code_inside_a_synchronous_transaction_is_refused(r):
    """async_to_sync(aenqueue) in code that holds a transaction: the job would
    be written before the commit, so it is refused (enqueue() there waits for it)."""
    with transaction.atomic(), pytest.raises(InvalidJobOptions, match="inside a transaction"):
        async_to_sync(aenqueue)("add", {}, on_commit=True)
    assert r.llen(get_queue("jobs").keys.pending) == 0
