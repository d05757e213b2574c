"""The samples workers record for the admin's charts and the metrics
(engine/samples.py, worker/sampling.py): what a worker's runs leave in Redis,
what the readers make of it, and what a failed send does."""

from __future__ import annotations

import time

import pytest
import redis

from django_jobqueue import enqueue, get_queue
from django_jobqueue.engine import samples
from django_jobqueue.engine.browse import server_time_ms
from django_jobqueue.engine.keys import QueueKeys
from tests.helpers.workers import drain


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
    points = samples.read_series(r, keys, "1h", server_time_ms(r))
    assert len(points) == 360
    done = [p for p in points if p.completed or p.failed]
    assert sum(p.completed for p in done) == 6
    assert sum(p.failed for p in done) == 2
    assert points[-1].pending == 0  # noted at the last send, the queue drained
    assert all(p.latency_p95_s is not None for p in done)


def test_buckets_expire_on_their_own_and_the_histograms_never_do(r):
    keys = QueueKeys("jobq-test", "q")
    book = samples.SampleBook()
    book.ran("q", completed=True, duration_s=0.01, latency_s=0.002)
    samples.flush(r, [("q", keys)], book)
    now_s = server_time_ms(r) // 1000
    hour, day = samples.HOUR, samples.DAY
    assert 0 < r.ttl(keys.samples_bucket(hour[0], now_s - now_s % hour[0])) <= hour[0] + hour[1]
    assert 0 < r.ttl(keys.samples_bucket(day[0], now_s - now_s % day[0])) <= day[0] + day[1]
    assert r.ttl(keys.samples_hist) == -1
    assert len(r.keys(f"{keys.samples_prefix}*")) == 3


def test_counts_from_several_workers_meet_in_one_bucket(r):
    keys = QueueKeys("jobq-test", "q")
    now_ms = 1_700_000_003_000  # inside one 10-second bucket for both sends
    for completed in (True, False):
        book = samples.SampleBook()
        book.ran("q", completed=completed, duration_s=0.2, latency_s=1.5)
        samples.flush(r, [("q", keys)], book, now_ms=now_ms)
    (point,) = [p for p in samples.read_series(r, keys, "1h", now_ms) if p.completed or p.failed]
    assert (point.completed, point.failed) == (1, 1)
    assert point.start_s == 1_700_000_000
    assert 1.0 < point.latency_p50_s <= 2.5  # the bucket (1, 2.5]


def test_a_send_that_fails_keeps_the_counts_for_the_next(r):
    keys = QueueKeys("jobq-test", "q")
    book = samples.SampleBook()
    book.ran("q", completed=True, duration_s=0.01, latency_s=None)
    gone = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    with pytest.raises(redis.ConnectionError):
        samples.flush(gone, [("q", keys)], book)
    book.ran("q", completed=True, duration_s=0.01, latency_s=None)
    samples.flush(r, [("q", keys)], book)
    assert samples.read_histograms(r, keys)["duration"].count == 2
    assert samples.read_histograms(r, keys)["latency"].count == 0  # no latency known: none counted


def test_one_send_is_one_script_call_a_queue_whatever_the_traffic(r):
    queues = [(name, QueueKeys("jobq-test", name)) for name in ("a", "b", "c")]
    book = samples.SampleBook()
    for i in range(1000):
        book.ran("a", completed=True, duration_s=i / 1000, latency_s=i / 100)
    r.config_resetstat()
    samples.flush(r, queues, book)
    calls = {
        name: stats["calls"]
        for name, stats in r.info("commandstats").items()
        if name.startswith("cmdstat_eval") or name == "cmdstat_hincrby"
    }
    assert calls.get("cmdstat_evalsha", 0) + calls.get("cmdstat_eval", 0) == 3


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


def test_unreadable_counts_in_redis_read_as_zero_not_an_error(r):
    keys = QueueKeys("jobq-test", "q")
    r.hset(keys.samples_hist, mapping={"h:d3": "many", "h:dsum_us": "x"})
    hist = samples.read_histograms(r, keys)["duration"]
    assert (hist.count, hist.sum_s) == (0, 0.0)
