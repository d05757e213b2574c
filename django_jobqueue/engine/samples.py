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
import time
from collections.abc import Callable, Sequence
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

# Batches kept for sending again while Redis does not answer: 100 sends, about
# 8 minutes at FLUSH_SECONDS (samples are for charts; an outage longer than that
# loses the oldest).
MAX_UNSENT = 100

# Field names in Redis: c, f (completed, failed), l<i> (latency bucket i) go to
# the histograms hash and the time buckets; h:d<i>, h:dsum_us, h:lsum_us (the
# durations, and both sums) to the histograms hash only.
_LATENCY = tuple(f"l{i}" for i in range(len(BOUNDS_S) + 1))
_DURATION = tuple(f"h:d{i}" for i in range(len(BOUNDS_S) + 1))


def due_ms(enqueued_at_ms: Any, run_at_ms: Any) -> int | None:
    """When a job became due, from its hash's two fields: enqueued, or its
    delay or backoff over (the later); None when neither is a time (a value
    written by hand past any clock counts as none)."""
    times = [n for n in (_count(enqueued_at_ms), _count(run_at_ms)) if n is not None]
    return max(times, default=None)


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
    """One worker's counts since its last flush, per queue and 10-second bucket
    (thread-safe: every runner thread writes, the maintenance thread takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], _Counts] = {}

    def ran(self, queue: str, *, completed: bool, duration_s: float, latency_s: float | None, at_ms: float) -> None:
        """A run of a job of ``queue`` ended at ``at_ms`` (the Redis server's
        clock, as well as the worker knows it): completed, or failed (an attempt
        that raised, retried or dead-lettered). ``latency_s``: from due to start."""
        at_s = int(at_ms // 1000)
        key = (queue, at_s - at_s % HOUR[0])
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = _Counts()
            if completed:
                counts.completed += 1
            else:
                counts.failed += 1
            counts.durations[bucket_index(duration_s)] += 1
            counts.duration_us += int(duration_s * 1_000_000)
            if latency_s is not None:
                counts.latencies[bucket_index(latency_s)] += 1
                counts.latency_us += int(latency_s * 1_000_000)

    def take(self) -> dict[tuple[str, int], _Counts]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts


@dataclass(frozen=True)
class Batch:
    """Counts of one queue and bucket, numbered: sent again unchanged until
    Redis has answered, and recognised there if it arrives twice."""

    queue: str
    start_s: int
    seq: int
    fields: list[Any]


class SampleSender:
    """Sends a worker's counts (samples.lua: one call per batch, all in one
    pipeline); keeps the batches Redis did not answer, to send them again;
    and tracks how far the server's clock is from this machine's."""

    def __init__(
        self, worker_id: str, queues: Sequence[tuple[str, QueueKeys]], clock: Callable[[], float] = time.time
    ) -> None:
        self.worker_id = worker_id
        self._clock = clock  # this machine's, in s
        self.queues = list(queues)
        self.offset_ms = 0.0  # the Redis server's clock minus this machine's, at the last send
        self.unsent: list[Batch] = []
        self.broken: set[str] = set()  # queues whose samples keys hold another type
        self._seq = 0

    def server_ms(self, local_ms: float) -> float:
        return local_ms + self.offset_ms

    def flush(self, client: Any, book: SampleBook, now_ms: int = 0) -> None:
        """Send ``book``'s counts and the batches still unsent; note every
        queue's depths (a call without counts for a queue that ran nothing).
        Raises the first error after every call has had its turn; the batches
        of the calls that failed are kept (at most MAX_UNSENT, oldest dropped)."""
        for (queue, start), counts in sorted(book.take().items(), key=lambda item: item[0][1]):
            self._seq += 1
            self.unsent.append(Batch(queue, start, self._seq, counts.fields()))
        del self.unsent[:-MAX_UNSENT]
        keys = dict(self.queues)
        script = scripts.get("samples")
        sending = [b for b in self.unsent if b.queue in keys]
        sending += [Batch(name, 0, 0, []) for name in keys if not any(b.queue == name for b in sending)]
        calls = []
        for batch in sending:
            args = script.argv_for(
                now=now_ms,
                worker=self.worker_id,
                seq=batch.seq,
                start=batch.start_s,
                fine_step=HOUR[0],
                fine_keep=HOUR[1] + HOUR[0],
                coarse_step=DAY[0],
                coarse_keep=DAY[1] + DAY[0],
                counts=batch.fields,
            )
            calls.append((script, script.keys_for(keys[batch.queue]), args))
        sent_at = self._clock() * 1000
        replies = scripts.run_pipeline(client, calls, raise_on_error=False)
        returned_at = self._clock() * 1000
        failed: Exception | None = None
        answered = set()
        for batch, reply in zip(sending, replies, strict=True):
            if isinstance(reply, Exception):
                failed = failed or reply
                continue
            status, server_now = int(reply[0]), int(reply[1])
            self.offset_ms = server_now - (sent_at + returned_at) / 2
            answered.add(batch.seq)
            if status < 0:
                self.broken.add(batch.queue)  # its counts are dropped: they have nowhere to go
            else:
                self.broken.discard(batch.queue)
        self.unsent = [b for b in self.unsent if b.seq not in answered]
        if failed is not None:
            raise failed


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


# Counts past this are not ours (written by hand): a float cannot hold them exactly.
_MAX_COUNT = 2**53


def _count(value: Any) -> int | None:
    """A count as written by samples.lua; None for anything else."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < _MAX_COUNT else None


def _decoded(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}


def _histogram(fields: dict[str, Any], names: Sequence[str], sum_field: str) -> Histogram:
    return Histogram(
        BOUNDS_S, tuple(_count(fields.get(f)) or 0 for f in names), (_count(fields.get(sum_field)) or 0) / 1e6
    )


def histograms_from(raw: Any) -> dict[str, Histogram]:
    """The two histograms (``duration``, ``latency``) of an HGETALL of
    ``samples_hist``; {} when the reply is not a hash (an error, a key of
    another type). A field that is not a count counts nothing."""
    if not isinstance(raw, dict):
        return {}
    fields = _decoded(raw)
    return {
        "duration": _histogram(fields, _DURATION, "h:dsum_us"),
        "latency": _histogram(fields, _LATENCY, "h:lsum_us"),
    }


def read_histograms(client: Any, keys: QueueKeys) -> dict[str, Histogram]:
    """The queue's two histograms since it began, ``duration`` and ``latency``;
    {} when the key holds another type. One call."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.samples_hist)
    (raw,) = pipe.execute(raise_on_error=False)
    return histograms_from(raw)


@dataclass(frozen=True)
class Point:
    """One time bucket of a queue's series."""

    start_s: int
    completed: int | None  # None: not known yet (the bucket is still filling) or unreadable
    failed: int | None
    pending: int | None  # None: no worker noted the depth in that bucket
    processing: int | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    unreadable: bool = False  # the bucket holds what samples.lua does not write

    @property
    def written(self) -> bool:
        return self.pending is not None or bool(self.completed or self.failed)


def point_from(start_s: int, raw: Any, *, complete: bool) -> Point:
    """The Point of one bucket from its HGETALL reply. Counts of a bucket that
    is not ``complete`` (its batches may still be on their way) are left out."""
    fields = _decoded(raw)
    values = {name: _count(value) for name, value in fields.items()}
    unreadable = not isinstance(raw, dict) or any(v is None for v in values.values())
    latencies = [values.get(f) or 0 for f in _LATENCY]
    return Point(
        start_s=start_s,
        completed=(values.get("c") or 0) if complete else None,
        failed=(values.get("f") or 0) if complete else None,
        pending=values.get("pending"),
        processing=values.get("processing"),
        latency_p50_s=quantile(BOUNDS_S, latencies, 0.5),
        latency_p95_s=quantile(BOUNDS_S, latencies, 0.95),
        unreadable=unreadable,
    )


def read_series(client: Any, keys: QueueKeys, span: str, now_ms: int, cache: BucketCache | None = None) -> list[Point]:
    """The queue's points over ``span`` ("1h" or "24h") up to ``now_ms`` (the
    Redis server's clock), oldest first, one per step: a pipeline of one HGETALL
    per step (360 or 288) not in ``cache``. A bucket's counts are complete
    FLUSH_SECONDS (and a second) after it ends, when its batches have arrived."""
    step, length = SERIES[span]
    now_s = int(now_ms) // 1000
    last = now_s - now_s % step
    starts = list(range(last - length + step, last + step, step))
    names = [keys.samples_bucket(step, start) for start in starts]
    known = cache.get_many(names, now_s) if cache is not None else {}
    missing = [name for name in names if name not in known]
    pipe = client.pipeline(transaction=False)
    for name in missing:
        pipe.hgetall(name)
    replies = dict(zip(missing, pipe.execute(raise_on_error=False) if missing else [], strict=True))
    points = []
    for start, name in zip(starts, names, strict=True):
        complete = start + step + FLUSH_SECONDS + 1 <= now_s
        raw = known[name] if name in known else replies[name]
        if cache is not None and name not in known and start + step + SETTLED_S <= now_s:
            cache.put(name, raw, now_s)
        points.append(point_from(start, raw, complete=complete))
    return points


# A bucket this long over is settled: only batches a worker could not send for
# a minute (Redis away) still change it.
SETTLED_S = 60


class BucketCache:
    """Buckets already read, for readers that read the same series again and
    again (the admin's refresh): a settled bucket is read again after
    ``ttl_s`` rather than on every refresh. Thread-safe; holds at most
    ``size`` buckets."""

    def __init__(self, ttl_s: int = 300, size: int = 20_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, Any]] = {}

    def get_many(self, names: Sequence[str], now_s: int) -> dict[str, Any]:
        with self._lock:
            found = {name: self._held.get(name) for name in names}
        return {name: entry[1] for name, entry in found.items() if entry is not None and now_s - entry[0] < self.ttl_s}

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def put(self, name: str, raw: Any, now_s: int) -> None:
        if isinstance(raw, Exception):
            return
        with self._lock:
            if len(self._held) >= self.size:
                self._held = {k: v for k, v in self._held.items() if now_s - v[0] < self.ttl_s}
                if len(self._held) >= self.size:
                    self._held.clear()
            self._held[name] = (now_s, raw)
