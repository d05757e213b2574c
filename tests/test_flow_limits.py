"""Flow control across the fleet (issue 24, points 1 to 3): a queue's global
concurrency and rate limit, held by the claim itself, and per-key concurrency
without head-of-line blocking. Every way a claim ends gives its slot back; a
dead worker's slots come back with its jobs; a worker that finds the queue
limited waits in one blocking call, not a poll."""

from __future__ import annotations

import threading
import time

import pytest

from django_jobqueue import InvalidJobOptions, enqueue, enqueue_many, get_queue, job
from django_jobqueue.conf import get_settings
from django_jobqueue.engine import scripts
from django_jobqueue.engine.bulk import purge
from django_jobqueue.engine.limits import FlowLimits, Rate, parse_rate, read_state, set_limits
from django_jobqueue.exceptions import ConfigurationError
from django_jobqueue.flow_limits import limits_view
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker import Worker
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain


@job(name="flow.noop", queue="jobs")
def noop(payload, job):
    return None


STARTED: list[str] = []  # ids of the flow.hold jobs whose handler began
RELEASE = threading.Event()  # lets them return


@job(name="flow.hold", queue="jobs")
def hold(payload, job):
    STARTED.append(job.id)
    RELEASE.wait(60)


@job(name="flow.export", queue="jobs", concurrency_key=lambda payload: payload["customer"], concurrency=1)
def export(payload, job):
    return payload["customer"]


def limited(r, clock, cap: int = 0, rate: Rate | None = None, **options) -> RedisJobQueue:
    return RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock, limits=FlowLimits(cap, rate), **options)


def in_use(q: RedisJobQueue) -> int:
    return read_state(q.client, q.keys, q.limits).slots_in_use


# ------------------------------------------------------ global concurrency


def test_a_claim_hands_out_no_more_jobs_than_the_global_concurrency(r, clock):
    q = limited(r, clock, cap=2)
    ids = [q.enqueue({"n": n}) for n in range(5)]

    first, second = q.claim_nowait("w1"), q.claim_nowait("w2")
    assert [first.id, second.id] == ids[:2]
    assert q.claim_nowait("w3") is None
    assert q.claim_many(5, "w3") == []
    assert in_use(q) == 2
    assert r.llen(q.keys.pending) == 3  # waiting, in order, untouched


def test_short_jobs_may_be_claimed_ahead_within_the_free_slots(r, clock):
    """Under a global concurrency alone, a worker whose jobs are short claims a
    batch (a job held for a busy runner holds its slot): never more than the
    free slots."""
    q = limited(r, clock, cap=3)
    for n in range(5):
        q.enqueue({"n": n})

    script, keys, args = q.claim_many_call(5, "w1", start=1, claim_ahead=True)
    got = q.parse_claim_many(script(r, keys, args))

    assert len(got) == 3 and in_use(q) == 3
    assert q.claim_many(5, "w1", start=0) == []


def test_a_limited_queue_has_no_jobs_claimed_ahead_unless_they_are_short(r, clock):
    """A job held for a busy runner would hold a slot that another worker's
    idle runner could use: only the jobs that start now are claimed."""
    q = limited(r, clock, cap=10)
    for n in range(5):
        q.enqueue({"n": n})

    assert q.claim_many(5, "w1", start=0) == []
    assert len(q.claim_many(5, "w1", start=1)) == 1
    assert len(q.claim_many(5, "w1", start=2)) == 2


def test_a_rate_limited_queue_never_has_jobs_claimed_ahead(r, clock):
    """A batch claim takes only the jobs that start now: a job held for a busy
    runner would start later than its claim, and starts could bunch past the
    rate."""
    q = limited(r, clock, rate=Rate(10, 1000))
    for n in range(8):
        q.enqueue({"n": n})

    script, keys, args = q.claim_many_call(5, "w1", start=0, claim_ahead=True)  # short jobs: still none ahead
    assert q.parse_claim_many(script(r, keys, args)) == []
    assert len(q.claim_many(5, "w1", start=1)) == 1
    assert len(q.claim_many(5, "w1", start=3)) == 3
    assert len(q.claim_many(2, "w1")) == 2  # start=None: all start now, within the rate


def end_by_completion(q, claimed):
    q.complete(claimed, None)


def end_by_failure_retried(q, claimed):
    q.fail_outcome(claimed, "boom", retry_delay_ms=0)


def end_by_failure_dead_lettered(q, claimed):
    q.fail_outcome(claimed, "boom", terminal=True)


def end_by_requeue(q, claimed):
    q.requeue(claimed, count_attempt=False, front=False, event="requeued", counter="")


def end_by_delete(q, claimed):
    q.delete(claimed.id, claimed.claim_token)


def end_by_lease_expiry(q, claimed, clock):
    clock.advance(5.001)
    assert claimed.id in q.sweep().reclaimed


def end_by_lost_worker(q, claimed):
    assert q.take_back_worker_jobs(["w1"]).reclaimed == [claimed.id]


def end_by_ttl(q, claimed, clock):
    clock.advance(60.001)
    assert claimed.id in q.sweep().expired


ENDINGS = [
    end_by_completion,
    end_by_failure_retried,
    end_by_failure_dead_lettered,
    end_by_requeue,
    end_by_delete,
    end_by_lease_expiry,
    end_by_lost_worker,
    end_by_ttl,
]


@pytest.mark.parametrize("ending", ENDINGS, ids=lambda f: f.__name__.removeprefix("end_by_"))
def test_every_way_a_claim_ends_gives_its_slot_back(r, clock, ending):
    q = limited(r, clock, cap=1)
    q.enqueue({"first": True}, ttl_ms=60_000)
    claimed = q.claim_nowait("w1")
    q.enqueue({"second": True})
    assert q.claim_nowait("w2") is None

    if "clock" in ending.__code__.co_varnames:
        ending(q, claimed, clock)
    else:
        ending(q, claimed)

    assert in_use(q) == 0
    assert q.claim_nowait("w2") is not None


def test_a_dead_workers_slots_come_back_with_its_jobs_not_later(r, clock):
    q = limited(r, clock, cap=2)
    for n in range(3):
        q.enqueue({"n": n})
    held = [q.claim_nowait("dead"), q.claim_nowait("dead")]
    assert q.claim_nowait("alive") is None

    back = q.take_back_worker_jobs(["dead"]).reclaimed

    assert sorted(back) == sorted(j.id for j in held)
    assert in_use(q) == 0  # in the same script that handed the jobs back
    got = q.claim_many(3, "alive", start=3)
    assert {j.id for j in got} >= set(back)


def test_a_claim_that_ends_wakes_one_worker_waiting_for_a_slot(r, clock):
    q = limited(r, clock, cap=1)
    q.enqueue({})
    q.enqueue({})
    claimed = q.claim_nowait("w1")
    assert r.llen(q.keys.slots_freed) == 0

    q.complete(claimed, None)

    assert r.llen(q.keys.slots_freed) == 1  # what a waiting worker's BLPOP takes
    began = time.monotonic()
    assert q.claim(timeout_ms=5000, worker_id="w2") is not None
    assert time.monotonic() - began < 4  # woken, not timed out (a bound, not a measure)


def test_the_blocking_claim_hands_a_job_back_unchanged_when_the_limit_is_reached_meanwhile(r, clock):
    """BLMOVE takes the job before the stamp sees the limit: it goes back to
    the head of pending, no attempt used, nothing stamped."""
    q = limited(r, clock, cap=1)
    first = q.enqueue({"n": 1})
    holder = q.claim_nowait("w1")
    assert holder.id == first
    second = q.enqueue({"n": 2})
    r.blmove(q.keys.pending, q.keys.claiming, 1, "RIGHT", "LEFT")  # as a blocked worker's BLMOVE

    stamp = scripts.get("stamp")  # the stamp half, its id already moved
    argv = stamp.argv_for(
        now=clock(),
        claim_token="t",
        visibility_ms=5000,
        worker_id="w2",
        job_id="",
        expired_ttl=0,
        defer_last_chance="",
        **q.limits.argv(),
    )
    reply = stamp(r, q._claim_keys(), argv)

    assert [str(x) for x in reply] == ["limited", "0"]
    assert r.lrange(q.keys.pending, 0, -1) == [second]
    assert r.llen(q.keys.claiming) == 0
    assert r.hget(q.keys.job(second), "status") == "pending"
    assert r.hget(q.keys.job(second), "attempts") == "0"


def test_a_queue_without_limits_writes_no_limit_keys(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    q.enqueue({})
    q.complete(q.claim_nowait("w1"), None)
    for key in (q.keys.rate_log, q.keys.slots_freed, q.keys.limits, q.keys.waiting_keys):
        assert not r.exists(key)


# ------------------------------------------------------------- rate limits


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/s", Rate(10, 1000)),
        ("100/m", Rate(100, 60_000)),
        ("1000/h", Rate(1000, 3_600_000)),
        ("5/10s", Rate(5, 10_000)),
    ],
)
def test_rates_read_as_count_per_window(text, rate):
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("text", ["10", "ten/s", "0/s", "10/0s", "10/d", "", None, 10])
def test_a_bad_rate_is_a_clear_error(text):
    with pytest.raises(ValueError, match="a rate limit"):
        parse_rate(text)


def test_the_rate_window_slides_on_the_servers_clock(r, clock):
    """No window of the rate's length ever holds more claims than the rate:
    the fourth job waits until the first claim is a whole window old."""
    q = limited(r, clock, rate=Rate(3, 1000))
    for n in range(6):
        q.enqueue({"n": n})

    assert q.claim_nowait("w1") is not None
    clock.advance(0.4)
    assert len(q.claim_many(5, "w1")) == 2
    assert q.claim_nowait("w1") is None
    script, keys, args = q.claim_many_call(1, "w1", start=1)
    assert [str(x) for x in script(r, keys, args)] == ["limited", "600"]  # until the first claim leaves the window

    clock.advance(0.599)
    assert q.claim_nowait("w1") is None
    clock.advance(0.001)
    assert q.claim_nowait("w1") is not None
    assert q.claim_nowait("w1") is None  # the two at +400 ms are still in the window
    clock.advance(0.4)
    assert len(q.claim_many(5, "w1")) == 2


def test_a_rate_limited_claim_waits_for_the_window_not_the_whole_timeout(r):
    q = RedisJobQueue(r, "jobs", limits=FlowLimits(0, Rate(1, 300)))
    q.enqueue({})
    q.enqueue({})
    assert q.claim_nowait("w1") is not None

    began = time.monotonic()
    second = q.claim(timeout_ms=5000, worker_id="w1")

    assert second is not None
    assert time.monotonic() - began < 4  # woke when the window allowed it (a bound, not a measure)


# ------------------------------------------------------ run-time overrides


def test_an_override_in_redis_wins_over_the_settings_until_reset(r, clock):
    q = limited(r, clock, cap=1)
    for n in range(4):
        q.enqueue({"n": n})
    assert q.claim_nowait("w1") is not None
    assert q.claim_nowait("w1") is None

    record = set_limits(r, q.keys, who="alice", global_concurrency=3)
    assert len(q.claim_many(5, "w1", start=5)) == 2
    state = read_state(r, q.keys, q.limits)
    assert state.effective == FlowLimits(3) and state.configured == FlowLimits(1)
    assert state.overridden == {"global_concurrency"} and state.slots_in_use == 3
    assert record["who"] == "alice"

    set_limits(r, q.keys, who="bob", global_concurrency=None)  # no limit, whatever the settings say
    assert q.claim_nowait("w1") is not None

    set_limits(r, q.keys, who="carol", reset=True)
    state = read_state(r, q.keys, q.limits)
    assert state.effective == FlowLimits(1) and not state.overridden
    assert [c["who"] for c in state.changes] == ["carol", "bob", "alice"]
    assert state.changes[0]["before"] == {"global_concurrency": "0"} and state.changes[0]["after"] == {}


def test_a_bad_override_is_refused_and_changes_nothing(r, clock):
    q = limited(r, clock)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="global concurrency"):
            set_limits(r, q.keys, who="x", global_concurrency=bad)
    with pytest.raises(ValueError, match="nothing to change"):
        set_limits(r, q.keys, who="x")
    assert not r.exists(q.keys.limits) and not r.exists(q.keys.limits_log)


def test_a_limits_key_of_the_wrong_type_fails_the_claim_and_changes_nothing(r, clock):
    q = limited(r, clock, cap=1)
    job_id = q.enqueue({})
    r.set(q.keys.limits, "garbage")

    with pytest.raises(Exception, match="WRONGTYPE"):
        q.claim_nowait("w1")
    assert r.lrange(q.keys.pending, 0, -1) == [job_id]
    with pytest.raises(Exception, match="WRONGTYPE"):
        set_limits(r, q.keys, who="x", global_concurrency=2)


# ------------------------------------------------------------------ settings


def test_limits_come_from_the_queue_settings(jobq_settings):
    jobq_settings(QUEUES={"payments": {"GLOBAL_CONCURRENCY": 3, "RATE_LIMIT": "10/s"}})
    assert get_queue("payments").limits == FlowLimits(3, Rate(10, 1000))
    assert get_settings().queue("payments").limits == FlowLimits(3, Rate(10, 1000))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"GLOBAL_CONCURRENCY": 0}, "GLOBAL_CONCURRENCY.*a positive integer"),
        ({"GLOBAL_CONCURRENCY": "3"}, "GLOBAL_CONCURRENCY.*a positive integer"),
        ({"RATE_LIMIT": "10 a second"}, "RATE_LIMIT.*a rate like '10/s'"),
    ],
)
def test_bad_limit_settings_are_clear_errors(jobq_settings, setting, message):
    with pytest.raises(ConfigurationError, match=message):
        jobq_settings(QUEUES={"payments": setting})
        get_settings()


# ------------------------------------------------------ per-key concurrency


def test_jobs_of_a_full_key_wait_without_holding_back_other_keys(r):
    """One key's jobs at the head of the queue, another key's behind: the
    second key's job is claimed while the first key's wait."""
    first = [export.enqueue({"customer": "acme"}) for _ in range(150)]
    other = export.enqueue({"customer": "globex"})
    q = get_queue("jobs")

    running = q.claim_nowait("w1")
    assert running.id == first[0]
    behind = [q.claim_nowait("w1"), q.claim_nowait("w1")]

    assert other in [j.id for j in behind if j is not None]
    assert q.claim_nowait("w1") is None  # every acme job waits for acme's slot
    assert r.llen(q.keys.key_waiting_prefix + "acme") == 149
    assert r.llen(q.keys.pending) == 0


def test_a_key_slot_freed_hands_the_keys_oldest_waiting_job_back_first(r):
    ids = [export.enqueue({"customer": "acme"}) for _ in range(3)]
    q = get_queue("jobs")
    running = q.claim_nowait("w1")
    assert q.claim_nowait("w1") is None

    q.complete(running, None)

    assert q.claim_nowait("w1").id == ids[1]
    assert q.claim_nowait("w1") is None


@pytest.mark.parametrize("ending", ENDINGS, ids=lambda f: f.__name__.removeprefix("end_by_"))
def test_every_way_a_claim_ends_frees_its_keys_slot(r, clock, ending):
    """Within one sweep at most: the scripts that end claims hand the key's
    waiting job back at once; the sweep finds any slot they did not."""
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    fields = {"concurrency_key": "acme", "concurrency": "1"}
    q.enqueue({"first": True}, ttl_ms=60_000, extra=fields)
    waiting = q.enqueue({"second": True}, extra=fields)
    claimed = q.claim_nowait("w1")
    assert q.claim_nowait("w2") is None

    if "clock" in ending.__code__.co_varnames:
        ending(q, claimed, clock)
    else:
        ending(q, claimed)
    q.sweep()

    got = q.claim_many(3, "w2", start=3)
    assert len(got) == 1  # the key's one slot, taken again: by the waiting job, or by the first if it came back
    assert waiting in (got[0].id, *r.lrange(q.keys.key_waiting_prefix + "acme", 0, -1))


def test_a_job_cancelled_while_it_waits_for_its_key_never_runs(r):
    ids = [export.enqueue({"customer": "acme"}) for _ in range(3)]
    q = get_queue("jobs")
    running = q.claim_nowait("w1")
    assert q.claim_nowait("w1") is None
    q.cancel(ids[1])

    q.complete(running, None)

    assert q.claim_nowait("w1").id == ids[2]


def test_a_key_allows_as_many_jobs_as_its_concurrency(r):
    ids = enqueue_many(export, [{"customer": "acme"}] * 4, concurrency=2)
    q = get_queue("jobs")
    got = q.claim_many(4, "w1", start=4)
    assert [j.id for j in got] == ids[:2]


def test_enqueue_many_keeps_the_order_of_jobs_with_different_keys(r):
    ids = enqueue_many(export, [{"customer": c} for c in ("a", "a", "b", "a", "c")])
    q = get_queue("jobs")
    assert r.lrange(q.keys.pending, 0, -1)[::-1] == ids
    assert [r.hget(q.keys.job(i), "concurrency_key") for i in ids] == ["a", "a", "b", "a", "c"]


def test_a_key_can_be_given_per_enqueue(r):
    job_id = enqueue("flow.noop", {}, concurrency_key="tenant-7", concurrency=3)
    fields = r.hgetall(get_queue("jobs").keys.job(job_id))
    assert fields["concurrency_key"] == "tenant-7" and fields["concurrency"] == "3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_key": ""}, "concurrency_key must be"),
        ({"concurrency_key": "x" * 201}, "concurrency_key must be"),
        ({"concurrency_key": "a\nb"}, "concurrency_key must be"),
        ({"concurrency_key": "a", "concurrency": 0}, "concurrency must be an integer from 1"),
        ({"concurrency": 2}, "give a concurrency_key too"),
    ],
)
def test_bad_key_options_are_clear_errors_and_write_nothing(r, options, message):
    with pytest.raises(InvalidJobOptions, match=message):
        enqueue("flow.noop", {}, **options)
    assert r.llen(get_queue("jobs").keys.pending) == 0


def test_a_key_function_that_fails_is_a_clear_error_in_the_caller(r):
    with pytest.raises(InvalidJobOptions, match="concurrency_key raised KeyError"):
        export.enqueue({"no customer": True})
    with pytest.raises(InvalidJobOptions, match="concurrency_key must be"):
        export.enqueue({"customer": ["not", "a", "value"]})
    assert r.llen(get_queue("jobs").keys.pending) == 0


def test_a_worker_runs_every_job_of_a_full_key_in_the_end(r):
    ids = [export.enqueue({"customer": "acme"}) for _ in range(5)]
    ids.append(export.enqueue({"customer": "globex"}))
    drain("jobs", concurrency=4)
    q = get_queue("jobs")
    assert all(r.hget(q.keys.job(i), "status") == "completed" for i in ids)
    wait_for(lambda: not r.exists(q.keys.waiting_keys), what="the waiting keys to empty")


def test_the_admin_and_jobq_queues_say_how_many_keys_have_jobs_waiting(r):
    for customer in ("acme", "acme", "globex", "globex"):
        export.enqueue({"customer": customer})
    q = get_queue("jobs")
    q.claim_many(4, "w1", start=4)

    assert limits_view(q).keys_waiting == "2 concurrency keys with jobs waiting for a slot"


def test_a_burst_worker_drains_a_limited_queue_to_the_end(r, jobq_settings):
    """Limited is not empty: a burst worker waits for room and stops only when
    every job has run."""
    jobq_settings(QUEUES={"jobs": {"GLOBAL_CONCURRENCY": 1, "RATE_LIMIT": "50/s"}})
    ids = [enqueue("flow.noop", {"n": n}) for n in range(8)]
    drain("jobs", concurrency=4)
    q = get_queue("jobs")
    assert [r.hget(q.keys.job(i), "status") for i in ids] == ["completed"] * 8


# ------------------------------------------------- what a review broke first


KEY = {"concurrency_key": "acme", "concurrency": "1"}


def test_a_concurrency_keys_lists_of_another_type_limit_nothing_and_strand_no_job(r, clock):
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    first = q.enqueue({}, extra=KEY)
    r.set(q.keys.key_holders_prefix + "acme", "written by hand")

    claimed = q.claim_nowait("w1")  # the key is ignored, the job handed out as any other

    assert claimed.id == first
    second = q.enqueue({}, extra=KEY)
    assert q.claim_nowait("w1").id == second
    r.delete(q.keys.key_holders_prefix + "acme")
    r.set(q.keys.key_waiting_prefix + "acme", "written by hand")
    assert q.complete(claimed, None)  # ends as usual
    assert r.hget(q.keys.job(first), "status") == "completed"
    q.sweep()
    assert not r.exists(q.keys.waiting_keys)


def test_the_sweep_frees_a_keys_slot_behind_waiting_jobs_that_went_away(r, clock):
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    two = {"concurrency_key": "acme", "concurrency": "2"}
    ids = [q.enqueue({"n": n}, extra=two) for n in range(4)]
    holders = q.claim_many(4, "w1", start=4)
    assert [j.id for j in holders] == ids[:2]
    q.delete(ids[2])  # the oldest waiting job goes away
    q.delete(holders[0].id, holders[0].claim_token)  # a path that hands no waiting job back

    q.sweep()

    assert q.claim_nowait("w2").id == ids[3]


def test_purging_pending_purges_the_jobs_waiting_for_their_key_too(r):
    ids = [export.enqueue({"customer": "acme"}) for _ in range(3)]
    q = get_queue("jobs")
    running = q.claim_nowait("w1")
    assert q.claim_nowait("w1") is None

    result = purge(q, "pending")

    assert result.done == 2 and not r.exists(q.keys.job(ids[1])) and not r.exists(q.keys.job(ids[2]))
    q.complete(running, None)
    assert q.claim_nowait("w1") is None


def test_a_burst_worker_stops_when_nothing_waits_even_with_every_slot_held(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"GLOBAL_CONCURRENCY": 1}})
    q = get_queue("jobs")
    q.enqueue({}, name="flow.noop")
    q.claim_nowait("elsewhere")  # the only slot, held by another worker

    drain("jobs", concurrency=2)  # returns: pending is empty


def test_a_burst_worker_reaches_a_job_behind_many_of_a_full_key(r):
    q = get_queue("jobs")
    for _ in range(300):
        export.enqueue({"customer": "acme"})
    q.claim_nowait("elsewhere")  # holds acme's slot
    free = enqueue("flow.noop", {})

    drain("jobs", concurrency=1)

    assert r.hget(q.keys.job(free), "status") == "completed"
    assert r.llen(q.keys.key_waiting_prefix + "acme") == 299


def test_a_periodic_job_takes_no_concurrency_key():
    with pytest.raises(InvalidJobOptions, match="a periodic job takes no concurrency_key"):

        @job(name="flow.periodic", every=60, concurrency_key="x")
        def periodic(payload, job):
            return None


def test_hand_written_limits_out_of_bounds_read_safely(r, clock):
    q = RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)
    r.hset(q.keys.limits, mapping={"rate_count": "1", "rate_window_ms": "1e30"})
    zero = {"concurrency_key": "acme", "concurrency": "0"}
    ids = [q.enqueue({}, extra=zero) for _ in range(2)]

    assert q.claim_nowait("w1").id == ids[0]  # a window read as a day; a key's slots as at least one
    assert q.claim_nowait("w1") is None
    with pytest.raises(ValueError, match="at most 24h"):
        parse_rate("1/100000000000000h")


def test_a_worker_with_busy_runners_leaves_the_free_slots_to_other_workers(r, jobq_settings):
    """A job claimed ahead for a busy runner would hold a slot another
    worker's idle runner could use: two workers of one runner each, two slots,
    two long jobs: each worker runs one, at the same time."""
    jobq_settings(QUEUES={"jobs": {"GLOBAL_CONCURRENCY": 2}})
    STARTED.clear()
    RELEASE.clear()
    first, second = enqueue("flow.hold", {}), enqueue("flow.hold", {})
    workers = [Worker(["jobs"], concurrency=1, scheduler=False) for _ in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"install_signals": False}, daemon=True) for w in workers]
    try:
        threads[0].start()
        wait_for(lambda: STARTED == [first], what="the first worker to run the first job")
        threads[1].start()
        wait_for(lambda: STARTED == [first, second], timeout=10, what="the second worker to run the second job")
    finally:
        RELEASE.set()
        for w, t in zip(workers, threads, strict=True):
            w.stop()
            t.join(timeout=30)
