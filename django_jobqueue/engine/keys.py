"""Every Redis key name the app uses, built in one place.

Nothing else in the package formats a key. Lua scripts receive their keys
through ``KEYS``; the few scripts that touch many job hashes (the sweeps) get the
job-hash prefix as a key and append IDs to it, which stays inside the same hash
slot because the prefix carries the queue's hash tag in cluster mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# Characters that would break key parsing, glob patterns or cluster hash tags.
FORBIDDEN_NAME_CHARS = frozenset("{}:*?[] \t\r\n\\\"'")
MAX_NAME_LENGTH = 100


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` if it is usable inside a key, else raise ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
    bad = sorted(set(name) & FORBIDDEN_NAME_CHARS)
    if bad or not name.isprintable():
        raise ValueError(
            f"{kind} {name!r} contains characters not allowed in key names "
            f"({' '.join(repr(c) for c in bad) or 'non-printable'})"
        )
    return name


@dataclass(frozen=True)
class QueueKeys:
    """Key names of one queue.

    Frozen, so each name is built once, on first use (cached_property): the
    engine reads several of them on every call.

    The default (single-node) layout is exactly the seed's ``queue:jobs:*``.
    In cluster mode the queue name is wrapped in a hash tag, ``queue:{jobs}:*``,
    so every key of the queue lives in one slot and every script runs on one node.
    """

    prefix: str
    queue: str
    cluster: bool = False

    @cached_property
    def base(self) -> str:
        name = f"{{{self.queue}}}" if self.cluster else self.queue
        return f"{self.prefix}:{name}"

    # The seed's keys.
    @cached_property
    def pending(self) -> str:
        return f"{self.base}:pending"

    @cached_property
    def processing(self) -> str:
        return f"{self.base}:processing"

    @cached_property
    def completed(self) -> str:
        return f"{self.base}:completed"

    @cached_property
    def failed(self) -> str:
        return f"{self.base}:failed"

    @cached_property
    def events(self) -> str:
        return f"{self.base}:events"

    @cached_property
    def events_log(self) -> str:
        """Stream: every event also published on ``events``, capped (MAXLEN ~ 10 000).

        The Lua ``emit`` helper (lua/_lib.lua) appends ``<events>:log`` itself,
        so this name and that one must stay in step.
        """
        return f"{self.events}:log"

    @cached_property
    def events_listening(self) -> str:
        """String with a TTL: set (and kept fresh) by every events listener.

        The scripts append to the events log only while it exists: with no
        listener to catch up, the log would cost every event a write and memory
        for nothing. Derived from ``events`` in lua/_lib.lua too.
        """
        return f"{self.events}:listening"

    @cached_property
    def cancels(self) -> str:
        """Pub/sub channel: the id of each claimed job whose cancellation was
        asked (cancel.lua publishes it; every worker of the queue listens, and
        the one holding the job tells its handler, or drops it unstarted)."""
        return f"{self.base}:cancels"

    @cached_property
    def job_prefix(self) -> str:
        return f"{self.base}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    # Ours.
    @cached_property
    def claiming(self) -> str:
        """List BLMOVE fills; the stamp script empties it within milliseconds."""
        return f"{self.base}:claiming"

    @cached_property
    def unstamped(self) -> str:
        """Hash id -> ms a sweep first saw the id stuck in ``claiming``."""
        return f"{self.base}:unstamped"

    @cached_property
    def leases(self) -> str:
        """Sorted set id -> lease deadline (ms) of every stamped processing job."""
        return f"{self.base}:leases"

    @cached_property
    def scheduled(self) -> str:
        """Sorted set id -> due time (ms) of delayed jobs and retries in backoff."""
        return f"{self.base}:scheduled"

    @cached_property
    def deadlines(self) -> str:
        """Sorted set id -> TTL deadline (ms) of unfinished jobs that have a ttl."""
        return f"{self.base}:deadlines"

    @cached_property
    def unique(self) -> str:
        """Hash unique_key -> id of the unfinished job holding that key."""
        return f"{self.base}:unique"

    @cached_property
    def worker_jobs_prefix(self) -> str:
        """Prefix of the per-worker sets of job ids a worker holds in this queue."""
        return f"{self.base}:worker-jobs:"

    def worker_jobs(self, worker_id: str) -> str:
        """Set of the ids of this queue's jobs that ``worker_id`` is running."""
        return f"{self.worker_jobs_prefix}{worker_id}"

    @cached_property
    def stats(self) -> str:
        """Hash of counters shared by every process."""
        return f"{self.base}:stats"

    @cached_property
    def paused(self) -> str:
        """String "in", "out" or "all" while the queue is paused (Disque's QPAUSE)."""
        return f"{self.base}:paused"

    @cached_property
    def limits(self) -> str:
        """Hash of the flow limits set at run time (``global_concurrency``,
        ``rate_count`` and ``rate_window_ms``), which override the settings'
        until reset (engine/limits.py)."""
        return f"{self.base}:limits"

    @cached_property
    def limits_log(self) -> str:
        """List of JSON records of the changes to ``limits``, newest first (capped)."""
        return f"{self.limits}:log"

    @cached_property
    def rate_log(self) -> str:
        """Sorted set claim token -> claim time (ms) of the jobs handed out within
        the rate limit's window: the sliding window a RATE_LIMIT is held to."""
        return f"{self.base}:rate"

    @cached_property
    def slots_freed(self) -> str:
        """List a job holding a slot of the global concurrency pushes to when its
        claim ends: workers waiting for a slot block on it (BLPOP), not polling."""
        return f"{self.base}:slots-freed"

    @cached_property
    def key_holders_prefix(self) -> str:
        """Prefix of the sets of job ids holding a concurrency key's slots
        (``<prefix><key value>``; lua/_jobs.lua key_holders)."""
        return f"{self.base}:ckey-holders:"

    @cached_property
    def key_waiting_prefix(self) -> str:
        """Prefix of the lists of job ids waiting for a slot of their
        concurrency key (``<prefix><key value>``, oldest at the tail)."""
        return f"{self.base}:ckey-waiting:"

    @cached_property
    def waiting_keys(self) -> str:
        """Sorted set of the concurrency key values with jobs waiting (score:
        when the sweep last looked at the key, or when its first job waited)."""
        return f"{self.base}:ckeys-waiting"

    @cached_property
    def stats_samples(self) -> str:
        """List of JSON samples of ``stats`` taken by the admin, newest first, capped
        (its throughput figures are differences between samples)."""
        return f"{self.stats}:samples"

    @cached_property
    def samples_prefix(self) -> str:
        """Prefix of the workers' samples (engine/samples.py): ``<prefix>hist``,
        a hash of histogram counts, and ``<prefix><step>:<start>``, one hash per
        time bucket, which expires on its own."""
        return f"{self.base}:samples:"

    @cached_property
    def samples_hist(self) -> str:
        return f"{self.samples_prefix}hist"

    def samples_bucket(self, step_s: int, start_s: int) -> str:
        return f"{self.samples_prefix}{step_s}:{start_s}"

    @cached_property
    def sweep_lock(self) -> str:
        """String held by whichever process runs the maintenance sweep now."""
        return f"{self.base}:sweep-lock"

    @cached_property
    def schedules(self) -> str:
        """Sorted set schedule name -> its next tick (ms) of the schedules that enqueue here."""
        return f"{self.base}:schedules"

    @cached_property
    def schedules_owed(self) -> str:
        """Set of the names of schedules (``overlap="queue"``) owing a run once their last one finishes."""
        return f"{self.schedules}:owed"

    @cached_property
    def schedule_prefix(self) -> str:
        return f"{self.base}:schedule:"

    def schedule(self, name: str) -> str:
        """Hash of one schedule's state: its definition, next tick, last run, counters, pause."""
        return f"{self.schedule_prefix}{name}"

    def schedule_runs(self, name: str) -> str:
        """List of the ids of one schedule's latest runs, newest first (capped)."""
        return f"{self.schedule(name)}:runs"

    def all_static(self) -> list[str]:
        """Every fixed key of the queue (job hashes excluded); used by purge tools."""
        return [
            self.pending,
            self.processing,
            self.completed,
            self.failed,
            self.claiming,
            self.unstamped,
            self.leases,
            self.scheduled,
            self.deadlines,
            self.unique,
            self.stats,
            self.paused,
            self.sweep_lock,
            self.events_log,
            self.events_listening,
            self.stats_samples,
            self.samples_hist,
            self.limits,
            self.limits_log,
            self.rate_log,
            self.slots_freed,
            self.waiting_keys,
        ]


@dataclass(frozen=True)
class GlobalKeys:
    """Keys that are not tied to one queue: the worker registry.

    In cluster mode they share the hash tag ``{<prefix>}`` so the scripts that
    touch the registry and a worker's record run on one node.
    """

    prefix: str
    cluster: bool = False

    @cached_property
    def base(self) -> str:
        return f"{{{self.prefix}}}" if self.cluster else self.prefix

    @cached_property
    def workers(self) -> str:
        """Sorted set worker id -> last heartbeat (ms)."""
        return f"{self.base}:workers"

    @cached_property
    def worker_prefix(self) -> str:
        return f"{self.base}:worker:"

    def worker(self, worker_id: str) -> str:
        """Hash describing one worker: host, pid, queues, the jobs it runs."""
        return f"{self.worker_prefix}{worker_id}"
