"""What workers record of the jobs they run, for charts and metrics.

Each worker counts, per queue, the jobs it finished (completed, failed) and
two histograms: how long each run took, and how long each job waited from
being due (enqueued, or its delay or backoff over) to starting. Every few
seconds it adds its counts to Redis in one script call a queue
(lua/samples.lua), which also notes the queue's depths. Redis keeps:

- ``<prefix>hist``: the histograms' counts since the queue began, which only
  grow (Prometheus reads them as counters);
- ``<prefix>10:<start>``: one hash per 10 seconds, kept an hour, and
  ``<prefix>300:<start>``: one per 5 minutes, kept a day: the charts' points.

So the memory a queue's samples take is bounded by the buckets' count (360 +
288 small hashes), whatever the traffic, and a worker's cost is one call a
queue every FLUSH_SECONDS.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import scripts
from .keys import QueueKeys

# Upper bounds (seconds) of the histograms' buckets; one more bucket holds
# everything above the last. Shared by both histograms, so a chart can read
# a queue's latency at a glance of the bounds.
BOUNDS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
DURATION_BUCKETS_S = BOUNDS_S
LATENCY_BUCKETS_S = BOUNDS_S

FLUSH_SECONDS = 5.0
# The two series: (step, span) in seconds.
HOUR = (10, 3600)
DAY = (300, 86_400)
SERIES = {"1h": HOUR, "24h": DAY}

# Field names in Redis: c, f (completed, failed), l<i> (latency bucket i) go to
# the histograms hash and the time buckets; h:d<i>, h:dsum_us, h:lsum_us (the
# durations, and both sums) to the histograms hash only.
_LATENCY = tuple(f"l{i}" for i in range(len(BOUNDS_S) + 1))
_DURATION = tuple(f"h:d{i}" for i in range(len(BOUNDS_S) + 1))


def bucket_index(seconds: float) -> int:
    """The bucket ``seconds`` falls in: the first whose bound is >= it."""
    return bisect.bisect_left(BOUNDS_S, seconds)


@dataclass
class _Counts:
    completed: int = 0
    failed: int = 0
    duration_us: int = 0
    latency_us: int = 0

    def __post_init__(self) -> None:
        self.durations = [0] * (len(BOUNDS_S) + 1)
        self.latencies = [0] * (len(BOUNDS_S) + 1)

    def fields(self) -> list[Any]:
        out: list[Any] = []
        for name, n in (("c", self.completed), ("f", self.failed)):
            if n:
                out += [name, n]
        for names, counts in ((_LATENCY, self.latencies), (_DURATION, self.durations)):
            out += [x for name, n in zip(names, counts, strict=True) if n for x in (name, n)]
        if any(self.durations):
            out += ["h:dsum_us", self.duration_us]
        if any(self.latencies):
            out += ["h:lsum_us", self.latency_us]
        return out


class SampleBook:
    """One worker's counts since its last flush, per queue (thread-safe: every
    runner thread writes, the maintenance thread flushes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, _Counts] = {}

    def ran(self, queue: str, *, completed: bool, duration_s: float, latency_s: float | None) -> None:
        """A run of a job of ``queue`` ended: completed, or failed (an attempt
        that raised, retried or dead-lettered). ``latency_s``: from due to start."""
        with self._lock:
            counts = self._counts.get(queue)
            if counts is None:
                counts = self._counts[queue] = _Counts()
            if completed:
                counts.completed += 1
            else:
                counts.failed += 1
            counts.durations[bucket_index(duration_s)] += 1
            counts.duration_us += int(duration_s * 1_000_000)
            if latency_s is not None:
                counts.latencies[bucket_index(latency_s)] += 1
                counts.latency_us += int(latency_s * 1_000_000)

    def take(self) -> dict[str, _Counts]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def put_back(self, counts: dict[str, _Counts]) -> None:
        """Counts whose flush failed (Redis away): added to the next one."""
        with self._lock:
            for queue, old in counts.items():
                new = self._counts.setdefault(queue, _Counts())
                new.completed += old.completed
                new.failed += old.failed
                new.duration_us += old.duration_us
                new.latency_us += old.latency_us
                new.durations = [a + b for a, b in zip(new.durations, old.durations, strict=True)]
                new.latencies = [a + b for a, b in zip(new.latencies, old.latencies, strict=True)]


def flush(client: Any, queues: Sequence[tuple[str, QueueKeys]], book: SampleBook, now_ms: int = 0) -> None:
    """Send ``book``'s counts, one script call a queue in one pipeline; every
    queue in ``queues`` is sent (its depths are noted even with nothing run).
    On an error the counts go back into the book and the error is raised."""
    counts = book.take()
    script = scripts.get("samples")
    calls = []
    for name, keys in queues:
        args = script.argv_for(
            now=now_ms,
            fine_step=HOUR[0],
            fine_keep=HOUR[1] + HOUR[0],
            coarse_step=DAY[0],
            coarse_keep=DAY[1] + DAY[0],
            counts=counts[name].fields() if name in counts else [],
        )
        calls.append((script, script.keys_for(keys), args))
    try:
        scripts.run_pipeline(client, calls)
    except Exception:
        # A failed pipeline may have run some of its calls: those counts are
        # sent again. Samples are an estimate; a worker's counts are never dropped.
        book.put_back(counts)
        raise


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Histogram:
    bounds: tuple[float, ...]  # upper bounds (s), ascending, without +Inf
    counts: tuple[int, ...]  # per bucket, not cumulative; the last is above the last bound
    sum_s: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1), interpolated within its bucket as
        Prometheus's histogram_quantile does; None without observations."""
        return quantile(self.bounds, self.counts, q)


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == len(bounds):
                return bounds[-1]  # above the last bound: all that is known
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0  # a field written by hand: not ours to trust


def _decoded(raw: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def read_histograms(client: Any, keys: QueueKeys) -> dict[str, Histogram]:
    """The queue's two histograms since it began: ``duration`` and ``latency``. One call."""
    raw = _decoded(client.hgetall(keys.samples_hist) or {})
    return {
        "duration": Histogram(BOUNDS_S, tuple(_int(raw.get(f)) for f in _DURATION), _int(raw.get("h:dsum_us")) / 1e6),
        "latency": Histogram(BOUNDS_S, tuple(_int(raw.get(f)) for f in _LATENCY), _int(raw.get("h:lsum_us")) / 1e6),
    }


@dataclass(frozen=True)
class Point:
    """One time bucket of a queue's series."""

    start_s: int
    completed: int
    failed: int
    pending: int | None  # None: no worker flushed in that bucket
    processing: int | None
    latency_p50_s: float | None
    latency_p95_s: float | None


def read_series(client: Any, keys: QueueKeys, span: str, now_ms: int) -> list[Point]:
    """The queue's points over ``span`` ("1h" or "24h") up to ``now_ms`` (the
    Redis server's clock), oldest first, one per step: a pipeline of one HGETALL
    per step (360 or 288)."""
    step, length = SERIES[span]
    now_s = now_ms // 1000
    last = now_s - now_s % step
    starts = list(range(last - length + step, last + step, step))
    pipe = client.pipeline(transaction=False)
    for start in starts:
        pipe.hgetall(keys.samples_bucket(step, start))
    points = []
    for start, raw in zip(starts, pipe.execute(), strict=True):
        fields = _decoded(raw or {})
        latencies = [_int(fields.get(f)) for f in _LATENCY]
        points.append(
            Point(
                start_s=start,
                completed=_int(fields.get("c")),
                failed=_int(fields.get("f")),
                pending=_int(fields["pending"]) if "pending" in fields else None,
                processing=_int(fields["processing"]) if "processing" in fields else None,
                latency_p50_s=quantile(BOUNDS_S, latencies, 0.5),
                latency_p95_s=quantile(BOUNDS_S, latencies, 0.95),
            )
        )
    return points
