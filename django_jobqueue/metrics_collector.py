"""The Prometheus collector: one reading of Redis (metrics_snapshot.py) per scrape,
turned into metric families on a private registry (no global metric objects:
nothing is counted in this process, everything is read from Redis when asked).

Imports prometheus-client at the top: import it through metrics.build_registry(),
which says how to install it when it is missing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError

from .engine.redact import mask_credentials
from .engine.samples import Histogram
from .exceptions import JobQueueError
from .metrics_snapshot import Reading

logger = logging.getLogger("django_jobqueue.metrics")

# Counters of the <prefix>:<queue>:stats hash, by family. Only these become label
# values: a field written there by hand cannot add series.
# A job ends once, in one of these (docs/reliability.md: the counters equal the end states).
OUTCOMES = ("completed", "failed", "lost", "expired")
# The other things that happen to jobs.
EVENTS = (
    "retried",
    "reclaimed",
    "requeued",
    "deferred",
    "released",
    "nacked",
    "replayed",
    "deleted",
    "orphans",
    "dropped_failed",
)
HISTOGRAMS = {
    "duration": ("jobq_job_duration_seconds", "How long jobs ran (one sample per finished run), in seconds."),
    "latency": (
        "jobq_job_latency_seconds",
        "From the time a job was due (enqueued, or its delay or backoff over) to the start of its run, in seconds.",
    ),
}


class JobQueueCollector(Collector):
    """Every queue's metrics, read from Redis at each scrape.

    ``report_errors``: when Redis cannot be read, yield ``jobq_up 0`` (the
    standalone exporter, which must keep answering) instead of raising (the
    view, which answers 503).
    """

    def __init__(self, read: Callable[[], Reading], *, report_errors: bool) -> None:
        self._read = read
        self._report_errors = report_errors
        self._was_down = False

    def describe(self) -> Iterator[Metric]:
        # The families without samples: the registry learns the names without a Redis call.
        yield from _families(None, 0.0)

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            reading = self._read()
        except (RedisError, JobQueueError, OSError) as exc:
            if not self._report_errors:
                raise
            if not self._was_down:
                logger.warning("metrics: Redis could not be read: %s", mask_credentials(str(exc)))
            self._was_down = True
            yield from _families(None, time.perf_counter() - started)
            return
        if self._was_down:
            logger.warning("metrics: Redis can be read again")
        self._was_down = False
        yield from _families(reading, time.perf_counter() - started)


def build(read: Callable[[], Reading], *, report_errors: bool) -> CollectorRegistry:
    """A registry of its own holding only our collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobQueueCollector(read, report_errors=report_errors))
    return registry


def _families(reading: Reading | None, seconds: float) -> Iterator[Metric]:
    """Every family; with no reading (Redis down, or only describing), jobq_up 0
    and the scrape's duration, and the others without samples."""
    up = GaugeMetricFamily("jobq_up", "1 when this scrape could read Redis, else 0.", value=int(reading is not None))
    yield up
    yield GaugeMetricFamily("jobq_scrape_duration_seconds", "How long reading Redis took for this scrape.", seconds)
    queues = reading.queues if reading else []
    jobs = GaugeMetricFamily("jobq_jobs", "Jobs in each state now.", labels=["queue", "state"])
    oldest = GaugeMetricFamily(
        "jobq_oldest_pending_age_seconds",
        "How long the oldest pending job has waited since it was due (enqueued, or its delay or backoff over);"
        " 0 when none is pending.",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "jobq_queue_paused",
        '1 while the queue refuses new jobs (direction="in") or hands none out (direction="out").',
        labels=["queue", "direction"],
    )
    alive = GaugeMetricFamily(
        "jobq_workers_alive",
        "Live workers (heartbeat within WORKER_TIMEOUT_SECONDS) serving the queue.",
        labels=["queue"],
    )
    concurrency = GaugeMetricFamily(
        "jobq_worker_concurrency",
        "Runner threads of the live workers serving the queue (shared with their other queues): "
        "how many of its jobs can run at once.",
        labels=["queue"],
    )
    enqueued = CounterMetricFamily("jobq_jobs_enqueued", "Jobs enqueued.", labels=["queue"])
    processed = CounterMetricFamily(
        "jobq_jobs_processed", "Jobs that ended, by how (each job ends once).", labels=["queue", "outcome"]
    )
    events = CounterMetricFamily(
        "jobq_job_events",
        "Other things that happened to jobs (retries, reclaims, requeues...).",
        labels=["queue", "event"],
    )
    histograms = {
        which: HistogramMetricFamily(name, doc, labels=["queue"]) for which, (name, doc) in HISTOGRAMS.items()
    }
    for q in queues:
        for state, count in q.depths.items():
            jobs.add_metric([q.name, state], count)
        oldest.add_metric([q.name], q.oldest_pending_age_s or 0.0)
        paused.add_metric([q.name, "in"], int(q.paused in ("in", "all")))
        paused.add_metric([q.name, "out"], int(q.paused in ("out", "all")))
        alive.add_metric([q.name], q.workers_alive)
        concurrency.add_metric([q.name], q.concurrency)
        # Every counter from 0, so that rate() sees the first increment.
        enqueued.add_metric([q.name], q.counters.get("enqueued", 0))
        for outcome in OUTCOMES:
            processed.add_metric([q.name, outcome], q.counters.get(outcome, 0))
        for event in EVENTS:
            events.add_metric([q.name, event], q.counters.get(event, 0))
        for which, family in histograms.items():
            histogram = q.histograms.get(which)
            if histogram is not None:
                family.add_metric([q.name], _cumulative(histogram), histogram.sum_s)
    yield jobs
    yield oldest
    yield paused
    yield alive
    yield concurrency
    yield GaugeMetricFamily(
        "jobq_live_workers",
        "Every live worker process, whatever its queues.",
        value=reading.workers_alive if reading else None,
    )
    yield enqueued
    yield processed
    yield events
    yield from histograms.values()


def _cumulative(histogram: Histogram) -> list[tuple[str, float]]:
    """Prometheus's buckets (le -> samples up to it, +Inf last) from per-bucket counts."""
    out, total = [], 0
    for bound, count in zip([*histogram.bounds, float("inf")], histogram.counts, strict=True):
        total += count
        out.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(total)))
    return out
