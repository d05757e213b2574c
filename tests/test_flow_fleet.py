"""Flow limits held across worker processes (issue 24): two workers of eight
runner threads each, on queues limited in tests/settings_limits.py; a ledger
of what each job did (tests/testapp/jobs.py ``ledger``) shows what the fleet
did at once. A worker killed while it holds slots gives them back with its
jobs; a worker that waits for room does not poll Redis."""

from __future__ import annotations

import signal
import time

import pytest

from django_jobqueue import enqueue, enqueue_many, get_queue
from django_jobqueue.engine.limits import read_state, set_limits
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_worker, stop
from tests.testapp.jobs import ledger_entries

pytestmark = pytest.mark.django_db(transaction=False)


def fleet(redis_url: str, queue: str, n: int = 2):
    return [
        start_worker(
            redis_url,
            *("--queue", queue, "--concurrency", "8", "--worker-id", f"w{i}"),
            settings_module="tests.settings_limits",
        )
        for i in range(n)
    ]


def most_at_once(runs: list[dict]) -> int:
    """The most runs of the ledger under way at one moment."""
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _t, step in edges:
        now += step
        most = max(most, now)
    return most


def all_finished(r, queue: str, ids: list[str]) -> bool:
    keys = get_queue(queue).keys
    return all(r.hget(keys.job(i), "status") == "completed" for i in ids)


def run_until_finished(r, workers, queue: str, ids: list[str]) -> None:
    """Let ``workers`` run until every job of ``ids`` completed, then stop them
    (each must exit cleanly)."""
    try:
        wait_for(lambda: all_finished(r, queue, ids), timeout=60, what="every job to finish")
    finally:
        for w in workers:
            code, _out, err = stop(w)
            assert code == 0, err


def test_two_workers_of_eight_threads_never_run_more_than_the_global_concurrency(r, redis_server):
    ids = enqueue_many("flow.ledger", [{"seconds": 0.15}] * 16, queue="fast")
    run_until_finished(r, fleet(redis_server.url, "fast"), "fast", ids)
    runs = ledger_entries(r)
    assert sorted(run["id"] for run in runs) == sorted(ids)
    assert most_at_once(runs) == 2  # the limit, used and never passed
    assert read_state(r, get_queue("fast").keys, get_queue("fast").limits).slots_in_use == 0


def test_a_killed_worker_gives_its_slots_back_with_its_jobs(r, redis_server):
    keys = get_queue("fast").keys
    held = enqueue_many("flow.ledger", [{"first_run_seconds": 60, "seconds": 0.05}] * 2, queue="fast")
    victim = fleet(redis_server.url, "fast", n=1)[0]
    wait_for(
        lambda: all(r.hget(keys.job(i), "status") == "processing" for i in held),
        what="the victim to hold both slots",
    )
    others = enqueue_many("flow.ledger", [{"seconds": 0.05}] * 6, queue="fast")
    stop(victim, signal.SIGKILL)
    run_until_finished(r, fleet(redis_server.url, "fast", n=1), "fast", held + others)
    runs = ledger_entries(r)
    assert sorted(run["id"] for run in runs) == sorted(held + others)  # the victim recorded nothing
    assert all(r.hget(keys.job(i), "attempts") == "2" for i in held)  # run again by the survivor
    assert most_at_once(runs) <= 2
    assert r.zcard(keys.leases) == 0


def test_a_rate_limit_holds_across_two_workers(r, redis_server):
    ids = enqueue_many("flow.ledger", [{"seconds": 0.01}] * 14, queue="low")
    run_until_finished(r, fleet(redis_server.url, "low"), "low", ids)
    claims = sorted(run["claimed_at_ms"] for run in ledger_entries(r))
    assert len(claims) == 14
    # 5/s: a sixth claim is at least a whole second after the first of any five.
    assert all(later - first >= 1000 for first, later in zip(claims, claims[5:], strict=False))


def calls_per_second(r, seconds: float = 3.0) -> dict[str, float]:
    """Commands the server ran per second (every client), over ``seconds``: by
    command, and in all ("all", less the INFO that reads them)."""
    r.config_resetstat()
    time.sleep(seconds)
    stats = {name.removeprefix("cmdstat_"): s["calls"] / seconds for name, s in r.info("commandstats").items()}
    stats["all"] = sum(stats.values()) - 1 / seconds
    return stats


def test_a_worker_waiting_for_room_does_not_poll_redis(r, redis_server):
    """Measured against the same worker idle on an empty queue: waiting for a
    slot costs about one blocking call a second more, not a poll."""
    q = get_queue("high")
    set_limits(r, q.keys, who="test", global_concurrency=1)
    holder = q.enqueue({}, name="add")
    claimed = q.claim_nowait("elsewhere")  # holds the one slot (a 30 s lease)
    waiting = enqueue("add", {"a": 1, "b": 2}, queue="high")
    worker = start_worker(redis_server.url, "--queue", "high", "--concurrency", "8", "--worker-id", "w")
    try:
        time.sleep(1.5)  # started and waiting
        limited = calls_per_second(r)
        assert r.hget(q.keys.job(waiting), "status") == "pending"

        q.complete(claimed, None)
        wait_for(lambda: r.hget(q.keys.job(waiting), "status") == "completed", what="the waiting job to run")
        idle = calls_per_second(r)
    finally:
        code, _out, err = stop(worker)
        assert code == 0, err
    assert holder == claimed.id
    assert limited["all"] <= idle["all"] + 3, (limited, idle)
    assert limited.get("blpop", 0) <= 2  # one blocking wait a second (CLAIM_BLOCK_MS)
