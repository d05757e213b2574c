"""The samples workers record for the admin's charts and the metrics
(engine/samples.py, worker/sampling.py): what a worker's runs leave in Redis,
what the readers make of it, and what failed or repeated sends do."""

from __future__ import annotations

import time

import pytest
import redis

from django_jobqueue import enqueue, get_queue
from django_jobqueue.engine import samples
from django_jobqueue.engine.browse import server_time_ms
from django_jobqueue.engine.keys import GlobalKeys, QueueKeys
from django_jobqueue.worker.sampling import Sampler
from tests.helpers.workers import drain

A, B = QueueKeys("jobq-test", "a"), QueueKeys("jobq-test", "b")
T0 = 1_700_000_100_000  # ms; the start of a 10-second bucket and of a 5-minute one


def sender_for(*keys: QueueKeys, worker: str = "w1", **options) -> samples.SampleSender:
    return samples.SampleSender(worker, [(k.queue, k) for k in keys], **options)


def one_run(book: samples.SampleBook, keys: QueueKeys, at_ms: int = T0 + 3000, **run) -> None:
    book.ran(keys.queue, **{"completed": True, "duration_s": 0.2, "latency_s": 1.5, "at_ms": at_ms, **run})


def later(now_ms: int) -> int:
    """A moment when every bucket up to ``now_ms`` is complete (its batches arrived)."""
    return now_ms + int(samples.HOUR[0] + samples.FLUSH_SECONDS + 2) * 1000


def counted(r, keys: QueueKeys, now_ms: int = T0 + 3000) -> list[tuple[int, int | None, int | None]]:
    """(bucket start, completed, failed) of the hour's buckets that hold counts."""
    points = samples.read_series(r, keys, "1h", later(now_ms))
    return [(p.start_s, p.completed, p.failed) for p in points if p.completed or p.failed]


def test_a_worker_records_its_runs_histograms_and_a_point_with_the_depth(r):
    for i in range(6):
        enqueue("add", {"a": i, "b": 1})
    enqueue("boom", {})  # fails twice (max_attempts=2, no backoff)
    drain()
    keys = get_queue("jobs").keys

    hist = samples.read_histograms(r, keys)
    assert hist["duration"].count == 8  # 6 completed runs, 2 failed attempts
    assert hist["latency"].count == 8
    assert hist["duration"].sum_s > 0
    points = samples.read_series(r, keys, "1h", later(server_time_ms(r)))
    assert len(points) == 360
    assert sum(p.completed or 0 for p in points) == 6
    assert sum(p.failed or 0 for p in points) == 2
    assert [p.pending for p in points if p.pending is not None][-1] == 0  # noted at the last send: drained
    assert all(p.latency_p95_s is not None for p in points if p.completed or p.failed)


def test_counts_land_in_the_bucket_of_their_runs_and_depths_in_that_of_the_send(r):
    r.lpush(A.pending, "x", "y")
    book = samples.SampleBook()
    one_run(book, A, at_ms=T0 + 3000)
    sender_for(A).flush(r, book, now_ms=T0 + 25_000)  # sent two buckets later

    points = {p.start_s: p for p in samples.read_series(r, A, "1h", later(T0 + 25_000))}
    runs, send = points[T0 // 1000], points[T0 // 1000 + 20]
    assert (runs.completed, runs.pending) == (1, None)
    assert (send.completed, send.pending) == (0, 2)
    assert 1.0 < runs.latency_p50_s <= 2.5  # the bucket (1, 2.5]


def test_a_bucket_still_filling_has_no_counts_yet(r):
    book = samples.SampleBook()
    one_run(book, A)
    sender_for(A).flush(r, book, now_ms=T0 + 4000)
    (now_point,) = [p for p in samples.read_series(r, A, "1h", T0 + 4000) if p.start_s == T0 // 1000]
    assert now_point.completed is None and now_point.pending == 0


def test_buckets_expire_on_their_own_and_the_histograms_never_do(r):
    book = samples.SampleBook()
    one_run(book, A, at_ms=server_time_ms(r))
    sender_for(A).flush(r, book)
    now_s = server_time_ms(r) // 1000
    hour, day = samples.HOUR, samples.DAY
    assert 0 < r.ttl(A.samples_bucket(hour[0], now_s - now_s % hour[0])) <= hour[0] + hour[1]
    assert 0 < r.ttl(A.samples_bucket(day[0], now_s - now_s % day[0])) <= day[0] + day[1]
    assert r.ttl(A.samples_hist) == -1
    assert 0 < r.ttl(f"{A.samples_prefix}sent:w1") <= hour[0] + hour[1]
    assert len(r.keys(f"{A.samples_prefix}*")) == 4


def test_counts_from_several_workers_meet_in_one_bucket(r):
    for worker, completed in (("w1", True), ("w2", False)):
        book = samples.SampleBook()
        one_run(book, A, completed=completed)
        sender_for(A, worker=worker).flush(r, book, now_ms=T0 + 5000)
    assert counted(r, A) == [(T0 // 1000, 1, 1)]


def test_a_batch_sent_again_is_counted_once(r):
    """Its reply lost, or redis-py resending a pipeline after a timeout: the
    batch arrives twice, and its sequence number says so."""
    book, sender = samples.SampleBook(), sender_for(A)
    one_run(book, A)
    sender.flush(r, book, now_ms=T0 + 5000)
    batch = samples.Batch("a", T0 // 1000, 1, ["c", 1, "l9", 1])
    sender.unsent.append(batch)  # as if its reply had not come back
    sender.flush(r, book, now_ms=T0 + 6000)

    assert counted(r, A) == [(T0 // 1000, 1, 0)]
    assert samples.read_histograms(r, A)["latency"].count == 1
    assert sender.unsent == []


def test_a_send_that_fails_keeps_its_batches_for_the_next(r):
    book, sender = samples.SampleBook(), sender_for(A)
    one_run(book, A, latency_s=None)
    gone = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    with pytest.raises(redis.ConnectionError):
        sender.flush(gone, book, now_ms=T0 + 5000)
    one_run(book, A, latency_s=None)
    sender.flush(r, book, now_ms=T0 + 6000)

    assert samples.read_histograms(r, A)["duration"].count == 2
    assert samples.read_histograms(r, A)["latency"].count == 0  # no latency known: none counted
    assert sender.unsent == []


def test_a_queue_whose_samples_key_holds_another_type_spoils_no_other_queue(r):
    r.set(A.samples_bucket(samples.DAY[0], T0 // 1000), "written by hand")
    book, sender = samples.SampleBook(), sender_for(A, B)
    one_run(book, A)
    one_run(book, B)
    for n in range(3):  # sent again and again: B's count must not grow
        sender.flush(r, book, now_ms=T0 + 5000 + n)

    assert counted(r, B) == [(T0 // 1000, 1, 0)]
    assert sender.broken == {"a"} and sender.unsent == []
    assert not r.exists(A.samples_hist, A.samples_bucket(samples.HOUR[0], T0 // 1000)), "nothing half-written"


def test_one_send_is_one_script_call_a_queue_whatever_the_traffic(r):
    book = samples.SampleBook()
    for i in range(1000):
        one_run(book, A, duration_s=i / 1000, latency_s=i / 100)
    r.config_resetstat()
    sender_for(A, B, QueueKeys("jobq-test", "c")).flush(r, book, now_ms=T0 + 5000)
    calls = r.info("commandstats")
    assert calls.get("cmdstat_evalsha", {}).get("calls", 0) + calls.get("cmdstat_eval", {}).get("calls", 0) == 3


def test_the_sender_learns_how_far_the_servers_clock_is(r):
    sender = sender_for(A, clock=lambda: time.time() + 30)  # this machine 30 s ahead
    sender.flush(r, samples.SampleBook())
    assert sender.offset_ms == pytest.approx(-30_000, abs=1000)
    assert sender.server_ms(time.time() * 1000 + 30_000) == pytest.approx(server_time_ms(r), abs=1000)


def test_quantiles_interpolate_within_their_bucket_like_histogram_quantile():
    bounds = (1.0, 2.0, 4.0)
    assert samples.quantile(bounds, (0, 0, 0, 0), 0.5) is None
    assert samples.quantile(bounds, (10, 0, 0, 0), 0.5) == 0.5
    assert samples.quantile(bounds, (0, 10, 0, 0), 0.5) == 1.5
    assert samples.quantile(bounds, (5, 0, 5, 0), 0.95) == pytest.approx(3.8)
    assert samples.quantile(bounds, (0, 0, 0, 3), 0.5) == 4.0  # above the last bound: the bound


def test_a_job_waiting_out_its_delay_is_not_counted_as_waiting_for_a_worker(r):
    enqueue("add", {"a": 1, "b": 2}, delay=1)
    time.sleep(1.1)
    drain()
    latency = samples.read_histograms(r, get_queue("jobs").keys)["latency"]
    assert latency.count == 1
    assert latency.quantile(1.0) < 0.5  # from due to start, not from enqueue (1 s before)


def test_what_is_not_a_count_in_redis_is_read_as_nothing(r):
    r.hset(A.samples_hist, mapping={"h:d3": "many", "h:dsum_us": "9" * 400, "l2": "-4"})
    hist = samples.read_histograms(r, A)
    assert (hist["duration"].count, hist["duration"].sum_s, hist["latency"].count) == (0, 0.0, 0)
    r.delete(A.samples_hist)
    r.set(A.samples_hist, "written by hand")
    assert samples.read_histograms(r, A) == {}

    r.hset(A.samples_bucket(10, T0 // 1000), mapping={"c": "9" * 400, "pending": "-1"})
    (point,) = [p for p in samples.read_series(r, A, "1h", later(T0)) if p.start_s == T0 // 1000]
    assert point.unreadable and point.completed == 0 and point.pending is None


def test_a_job_hash_with_impossible_times_is_run_and_its_runner_lives_on(r):
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(4)]
    r.hset(get_queue("jobs").keys.job(ids[0]), "enqueued_at_ms", "9" * 400)
    worker = drain(concurrency=1)
    assert worker.stats.completed == 4


def test_a_worker_whose_samples_keys_hold_another_type_still_stops_cleanly(r):
    keys = get_queue("jobs").keys
    now_s = server_time_ms(r) // 1000
    r.set(keys.samples_hist, "written by hand")  # every send of this queue is refused
    r.set(keys.samples_bucket(10, now_s - now_s % 10), "written by hand")
    enqueue("add", {"a": 1, "b": 1})
    drain()
    assert r.zcard(GlobalKeys("queue").workers) == 0  # deregistered


def test_the_last_send_of_a_stopping_worker_never_raises(r):
    """Redis full (maxmemory, noeviction) refuses the samples script, not the
    deletes a stopping worker sends next: the last send must not end the shutdown."""
    sampler = Sampler("w1", [get_queue("jobs")], lambda: r)
    enqueue("add", {"a": 1, "b": 1})
    old = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            sampler.flush()
        sampler.flush_last()
    finally:
        r.config_set("maxmemory", old)
