"""Reading a queue page by page, looking up jobs, the workers, throughput and
memory: the reads behind the admin and the commands (their changes to many
jobs at once are in bulk.py).

Like queue.py this knows nothing of Django: it takes a RedisJobQueue (or a
client and keys) and plain values. Every read is bounded (LRANGE / ZRANGE with
offsets, a pipelined HMGET per page), so pages stay fast at millions of jobs.
Claim tokens never leave this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .keys import GlobalKeys, validate_name
from .queue import RedisJobQueue

LISTS = ("scheduled", "pending", "processing", "completed", "failed")
ROW_FIELDS = (
    "name",
    "status",
    "attempts",
    "max_attempts",
    "enqueued_at_ms",
    "run_at_ms",
    "claimed_at_ms",
    "lease_until_ms",
    "worker",
    "completed_at_ms",
    "failed_at_ms",
    "finished_at_ms",
    "last_error",
)
MAX_PER_PAGE = 200

# Throughput: the shared counters are sampled into a capped list at most once
# per SAMPLE_EVERY_MS by whoever looks (the admin's refresh); rates are the
# difference between now and the newest sample at least a window old.
SAMPLE_EVERY_MS = 10_000
SAMPLES_KEPT = 100  # ~16 minutes at one sample per 10 s
SAMPLED_COUNTERS = ("enqueued", "completed", "failed")
THROUGHPUT_WINDOWS_MINUTES = (1, 5, 15)


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def valid_job_id(value: object) -> bool:
    """True when ``value`` can be a job ID (what enqueue writes, or a caller's
    own ID): a short printable string with nothing that changes a key's meaning."""
    try:
        validate_name("job id", value)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- pages


@dataclass
class Page:
    which: str
    number: int
    per_page: int
    total: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        """1-based position of the first row on this page."""
        return (self.number - 1) * self.per_page + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        """1-based position of the last row on this page."""
        return self.first_index + len(self.rows) - 1 if self.rows else 0


def list_key(queue: RedisJobQueue, which: str) -> str:
    if which not in LISTS:
        raise ValueError(f"unknown list {which!r}: one of {', '.join(LISTS)}")
    return str(getattr(queue.keys, which))


def list_length(queue: RedisJobQueue, which: str) -> int:
    key = list_key(queue, which)
    return int(queue.client.zcard(key) if which == "scheduled" else queue.client.llen(key))


def page(queue: RedisJobQueue, which: str, number: int = 1, per_page: int = 25) -> Page:
    """One page of a list, in the order a reader wants it: pending and
    scheduled by when they will run (next first), the others newest first.

    Costs one length, one range of ``per_page`` ids and one pipelined HMGET
    per id, wherever the page is in the list.
    """
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    total = list_length(queue, which)
    pages = max(1, math.ceil(total / per_page))
    number = max(1, min(int(number), pages))
    start, stop = (number - 1) * per_page, number * per_page - 1
    key = list_key(queue, which)
    client = queue.client
    scores: dict[str, float] = {}
    if which == "scheduled":
        pairs = client.zrange(key, start, stop, withscores=True)
        ids = [_s(i) for i, _score in pairs]
        scores = {_s(i): score for i, score in pairs}
    elif which == "pending":
        # Oldest at the right: the page counts from the right end.
        ids = [_s(i) for i in reversed(client.lrange(key, -(stop + 1), -(start + 1)))]
    else:
        ids = [_s(i) for i in client.lrange(key, start, stop)]
    rows = job_rows(queue, ids)
    for row in rows:
        if row["id"] in scores:
            row["due_at_ms"] = int(scores[row["id"]])
    return Page(which, number, per_page, total, rows)


def job_rows(queue: RedisJobQueue, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The summary fields of each job (``missing`` when its hash is gone)."""
    pipe = queue.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(queue.keys.job(job_id), ROW_FIELDS)
    rows = []
    for job_id, values in zip(ids, pipe.execute() if ids else [], strict=True):
        row: dict[str, Any] = {"id": job_id, "missing": all(v is None for v in values)}
        for name, value in zip(ROW_FIELDS, values, strict=True):
            row[name] = None if value is None else _s(value)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ jobs


def get_job(queue: RedisJobQueue, job_id: str) -> dict[str, str] | None:
    """The job's hash (without its claim token), or None when this queue has
    no such job. Only this queue's keys are read: an ID of another queue's
    job finds nothing here."""
    if not valid_job_id(job_id):
        return None
    raw = queue.client.hgetall(queue.keys.job(job_id))
    if not raw:
        return None
    fields = {_s(k): _s(v) for k, v in raw.items()}
    if fields.get("queue", queue.queue_name) != queue.queue_name:
        return None
    # Tokens never leave Redis; for a claimed job, whether its run began
    # (a job claimed ahead of a free runner waits in its worker, unstarted).
    token = fields.pop("claim_token", None)
    started = fields.pop("started", None)
    if fields.get("status") == "processing":
        fields["started"] = "yes" if token and started == token else "no: claimed ahead, waiting for a runner"
    return fields


def find_job(queues: Iterable[RedisJobQueue], job_id: str) -> list[str]:
    """Names of the queues that hold a job with this ID (one round trip)."""
    if not valid_job_id(job_id):
        return []
    queues = list(queues)
    if not queues:
        return []
    pipe = queues[0].client.pipeline(transaction=False)
    for queue in queues:
        pipe.exists(queue.keys.job(job_id))
    return [q.queue_name for q, found in zip(queues, pipe.execute(), strict=True) if found]


def statuses(queue: RedisJobQueue, ids: Sequence[str]) -> dict[str, str | None]:
    """Each job's status (None when its hash is gone), in one round trip."""
    pipe = queue.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(queue.keys.job(job_id), "status")
    return {i: None if v is None else _s(v) for i, v in zip(ids, pipe.execute() if ids else [], strict=True)}


def decode_errors(text: str | None) -> list[dict[str, Any]]:
    """The job's ``errors`` field (a JSON list of {attempt, error, ts_ms})."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not ours: nested past Python's stack
        return [{"error": text}]
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


# ------------------------------------------------------------- workers


def worker_records(client: Any, keys: GlobalKeys, limit: int) -> list[tuple[str, float, dict[str, str]]]:
    """(id, heartbeat time, record as text) of the registered workers, most
    recent heartbeat first (at most ``limit``), in one round trip for the records."""
    entries = client.zrevrange(keys.workers, 0, limit - 1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for wid, _beat in entries:
        pipe.hgetall(keys.worker(_s(wid)))
    return [
        (_s(wid), beat, {_s(k): _s(v) for k, v in raw.items()})
        for (wid, beat), raw in zip(entries, pipe.execute() if entries else [], strict=True)
    ]


def workers(client: Any, keys: GlobalKeys, limit: int = 200) -> list[dict[str, Any]]:
    """The registered workers, most recent heartbeat first (at most ``limit``).

    Each running job is given as (queue, id): the claim token the worker
    record holds is dropped here.
    """
    out = []
    for wid, beat, record in worker_records(client, keys, limit):
        running = [j for j in _json_list(record.get("jobs")) if isinstance(j, list) and len(j) >= 2]
        out.append(
            {
                "id": wid,
                "host": record.get("host", ""),
                "pid": record.get("pid", ""),
                "queues": _json_list(record.get("queues")),
                "concurrency": record.get("concurrency", ""),
                "state": record.get("state", ""),
                "started_at_ms": _int_or_none(record.get("started_at_ms")),
                "beat_ms": int(beat),
                "jobs": [(str(j[0]), str(j[1])) for j in running],  # [queue, id, token]: no token
            }
        )
    return out


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text or "[]")
    except (ValueError, RecursionError):  # not ours: nested past Python's stack
        return []
    return value if isinstance(value, list) else []


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


# ---------------------------------------------------------- throughput


def server_time_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def sample_counters(queue: RedisJobQueue, counters: dict[str, int], now_ms: int) -> list[dict[str, int]]:
    """Add a sample of ``counters`` when the newest is SAMPLE_EVERY_MS old;
    return the samples, newest first (at most SAMPLES_KEPT, ~1 KB each queue)."""
    key = queue.keys.stats_samples
    samples = []
    for raw in queue.client.lrange(key, 0, -1):
        try:
            sample = json.loads(_s(raw))
        except (ValueError, RecursionError):
            continue
        if isinstance(sample, dict) and isinstance(sample.get("ts"), int):
            samples.append(sample)
    if not samples or now_ms - samples[0]["ts"] >= SAMPLE_EVERY_MS:
        sample = {"ts": now_ms, **{name: int(counters.get(name, 0)) for name in SAMPLED_COUNTERS}}
        pipe = queue.client.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(sample, separators=(",", ":")))
        pipe.ltrim(key, 0, SAMPLES_KEPT - 1)
        pipe.execute()
        samples.insert(0, sample)
    return samples


def throughput(samples: Sequence[dict[str, int]], counters: dict[str, int], now_ms: int) -> list[dict[str, Any]]:
    """Per window (1, 5, 15 minutes): counts per minute of SAMPLED_COUNTERS,
    from the newest sample at least that old (or the oldest there is, with
    ``seconds`` saying how long it really covers). None where samples are too
    young, or the counters went down (reset)."""
    out = []
    for minutes in THROUGHPUT_WINDOWS_MINUTES:
        window_ms = minutes * 60_000
        # Samples are newest first. A sample far older than the window (nobody
        # looked for a while) would describe another period: use the longest
        # span under the window instead, and say how long it is.
        old = [s for s in samples if now_ms - s["ts"] >= window_ms]
        young = [s for s in samples if SAMPLE_EVERY_MS <= now_ms - s["ts"] < window_ms]
        base = None
        if old and now_ms - old[0]["ts"] <= window_ms * 3 // 2:
            base = old[0]
        elif young:
            base = young[-1]
        entry: dict[str, Any] = {"minutes": minutes, "seconds": None}
        span = now_ms - base["ts"] if base else 0
        if base is not None:
            deltas = {name: int(counters.get(name, 0)) - int(base.get(name, 0)) for name in SAMPLED_COUNTERS}
            if all(d >= 0 for d in deltas.values()):
                entry["seconds"] = round(span / 1000)
                for name, delta in deltas.items():
                    entry[name] = round(delta * 60_000 / span, 1)
        out.append(entry)
    return out


# ------------------------------------------------------ retained memory

# The finished jobs a queue keeps, each list up to its count bound (HISTORY,
# FAILED_HISTORY), and within their CLEANUP lifetimes.
RETAINED = ("completed", "failed")
MEMORY_SAMPLE = 5  # the newest hashes of each list measured with MEMORY USAGE
# What a kept job holds besides what MEMORY USAGE counts (its hash, key and
# keyspace entry): its id on the list and its TTL entry, 110-130 B measured on
# Redis 7.0 (docs/data-model.md, "Memory").
ENTRY_BYTES = 120
# Per job, for a list with nothing to measure. Measured: a no-op job ~540 B
# kept, one with a 2 KB result ~3.2 KB, a dead letter with a short traceback
# ~2 KB (a field over 64 bytes turns the hash from a listpack to a table).
ASSUMED_JOB_BYTES = {"completed": 1024, "failed": 2048}
# The share of Redis maxmemory that the bounds may fill before the admin and
# the system check warn: pending jobs and everything else need the rest.
RETENTION_SHARE = 0.5


@dataclass
class Retained:
    """A queue's completed or failed list: what its jobs hold, an estimate."""

    which: str
    depth: int
    bound: int | None  # None: no count bound
    job_bytes: int  # per job: the average of ``sampled`` hashes, or ASSUMED_JOB_BYTES
    sampled: int = 0

    @property
    def held_bytes(self) -> int:
        return self.depth * self.job_bytes

    @property
    def bound_bytes(self) -> int | None:
        """What the list holds once full (None: it has no count bound)."""
        return None if self.bound is None else self.bound * self.job_bytes


def retained_memory(queue: RedisJobQueue, sample: int = MEMORY_SAMPLE) -> dict[str, Retained]:
    """Estimate the memory the jobs on the completed and failed lists hold:
    MEMORY USAGE of the newest ``sample`` hashes of each, averaged, plus
    ENTRY_BYTES, times the list's length. Two round trips. A list with
    nothing to measure (empty, or MEMORY refused by an ACL) is costed at
    ASSUMED_JOB_BYTES a job."""
    k = queue.keys
    bounds = {"completed": None if queue.history < 0 else queue.history, "failed": queue.failed_history}
    pipe = queue.client.pipeline(transaction=False)
    for which in RETAINED:
        pipe.llen(getattr(k, which))
        pipe.lrange(getattr(k, which), 0, sample - 1)
    replies = pipe.execute()
    ids = {which: [_s(i) for i in replies[2 * n + 1]] for n, which in enumerate(RETAINED)}
    pipe = queue.client.pipeline(transaction=False)
    for which in RETAINED:
        for job_id in ids[which]:
            pipe.memory_usage(k.job(job_id), samples=0)
    sizes = iter(pipe.execute(raise_on_error=False) if any(ids.values()) else [])
    out = {}
    for n, which in enumerate(RETAINED):
        measured = [s for s in (next(sizes) for _ in ids[which]) if isinstance(s, int)]
        job_bytes = sum(measured) // len(measured) + ENTRY_BYTES if measured else ASSUMED_JOB_BYTES[which]
        out[which] = Retained(which, int(replies[2 * n]), bounds[which], job_bytes, len(measured))
    return out


def maxmemory(client: Any) -> int | None:
    """Redis's maxmemory in bytes, None when it has none (the smallest of the
    primaries', in a cluster). INFO, not CONFIG GET: managed Redis services
    refuse CONFIG."""
    info = client.info("memory")
    limits = [info.get("maxmemory")] if "maxmemory" in info else [i.get("maxmemory") for i in info.values()]
    limits = [int(m) for m in limits if m]
    return min(limits) if limits else None


def retention_problem(queues: dict[str, dict[str, Retained]], limit: int | None) -> str | None:
    """Why the count bounds of these queues may not fit in Redis (None: they
    fit, or Redis has no maxmemory): what full lists would hold, summed over
    queues (a list with no count bound: what it holds now), against
    RETENTION_SHARE of maxmemory."""
    if not limit:
        return None
    total, parts = 0, []
    for name, lists in queues.items():
        terms = []
        for r in lists.values():
            full = r.bound_bytes
            total += r.held_bytes if full is None else full
            count = f"no bound, now {r.depth:,}" if r.bound is None else f"{r.bound:,}"
            terms.append(f"{count} {r.which} x {human_bytes(r.job_bytes)}")
        parts.append(f"{name}: {' + '.join(terms)}")
    if total <= limit * RETENTION_SHARE:
        return None
    return (
        f"the finished jobs the queues keep may hold about {human_bytes(total)} ({'; '.join(parts)}), "
        f"over {RETENTION_SHARE:.0%} of Redis maxmemory ({human_bytes(limit)})"
    )


def human_bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{n:,.0f} B" if step == 0 else f"{n:,.1f} {units[step]}"
