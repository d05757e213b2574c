"""QueueOperations: what RedisJobQueue does to jobs by id and to the queue as a whole.

Deleting, requeueing, retrying and replaying jobs by id, scanning a state,
pausing and resuming, reclaiming and sweeping, and reading a job's fields and
the queue's stats. The admin, the shell commands and the worker's maintenance
thread call these; the enqueue -> claim -> finish path of a job does not (but
for claim() reading paused_state() on an empty queue), so they live apart from
that hot path (queue.py). RedisJobQueue extends QueueOperations, which extends
QueueCore (queue_core.py: the state both read), so callers still see one class.
Every state change here is one Lua script (atomic).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import cluster, scripts
from .exceptions import JobNotCancellable, JobNotFound
from .progress import FIELDS as PROGRESS_FIELDS
from .progress import Progress
from .queue_core import QueueCore
from .replies import _CODES, Outcome, SweepResult, _s

logger = logging.getLogger("django_jobqueue")


class Refusal(enum.Enum):
    """Why a by-id change was refused, where Outcome has no word for it
    (Outcome.NOT_OWNER: the job is not in a state that allows the change).
    False, like the Outcomes that changed nothing."""

    # requeue_now(): the job is at-most-once and running; handing it out again
    # could run it twice.
    AT_MOST_ONCE_RUNNING = "at_most_once_running"
    # retry() / replay(): another unfinished job holds the job's unique key.
    UNIQUE_KEY_HELD = "unique_key_held"

    def __bool__(self) -> bool:
        return False


class Cancellation(enum.Enum):
    """What cancel() did."""

    CANCELLED = "cancelled"  # the job waited: it ended now and never runs
    REQUESTED = "requested"  # the job is claimed: its worker is told, and ends it


@dataclass
class ReplayReport:
    """What replay_dead_letter() did."""

    replayed: int = 0
    # Left on the failed list: another unfinished job holds their unique key.
    refused: list[str] = field(default_factory=list)


class QueueOperations(QueueCore):
    """The by-id and whole-queue operations of a queue (RedisJobQueue adds the
    path of a job: use RedisJobQueue)."""

    # ------------------------------------------------------------------- by id

    def _by_id(self, name: str, job_id: str, **argv: str) -> Outcome:
        """Run a by-id script (KEYS: the job's hash and the queue's keys; ARGV:
        now, the id, then ``argv`` by name) and decode its code."""
        return _CODES[self._by_id_code(name, job_id, **argv)]

    def _by_id_code(self, name: str, job_id: str, **argv: str) -> int:
        """_by_id()'s script call, returning its code undecoded."""
        script = scripts.get(name)
        keys = script.keys_for(self.keys, job=self.keys.job(job_id))
        return int(script(self.client, keys, script.argv_for(now=self._now(), id=job_id, **argv)))

    def delete(self, job_id: str, claim_token: str = "") -> Outcome:
        """Delete a job. With a token only its current claim may; without one,
        any job that is not running."""
        return self._by_id("delete", job_id, claim_token=claim_token)

    def cancel(self, job_id: str) -> Cancellation:
        """Cancel a job (cancel.lua). A waiting job (pending, scheduled,
        waiting out a retry) ends ``cancelled`` now and never runs:
        Cancellation.CANCELLED. A claimed job is asked to stop, its worker
        told: Cancellation.REQUESTED (also when it was asked already).
        JobNotFound: no such job; JobNotCancellable: it has finished."""
        script = scripts.get("cancel")
        keys = script.keys_for(self.keys, job=self.keys.job(job_id))
        args = script.argv_for(now=self._now(), id=job_id, completed_ttl=self.completed_ttl_s, history=self.history)
        code = int(script(self.client, keys, args))
        if code == 0:
            raise JobNotFound(f"no job {job_id!r} in queue {self.queue_name!r}")
        if code == -1:
            status = _s(self.client.hget(self.keys.job(job_id), "status") or b"finished")
            raise JobNotCancellable(f"job {job_id!r} has finished ({status}): it cannot be cancelled", job_id, status)
        return Cancellation.CANCELLED if code == 1 else Cancellation.REQUESTED

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job's cancellation was asked (one HEXISTS)."""
        return bool(self.client.hexists(self.keys.job(job_id), "cancel_requested_ms"))

    def requeue_now(self, job_id: str) -> Outcome | Refusal:
        """Put an unfinished job at the head of pending: a scheduled one runs
        now, a running one loses its claim and runs again. NOT_OWNER: finished.
        Refusal.AT_MOST_ONCE_RUNNING: an at-most-once job that is running is
        never handed out again (it could run twice); nothing changes."""
        code = self._by_id_code("requeue_now", job_id)
        return Refusal.AT_MOST_ONCE_RUNNING if code == -2 else _CODES[code]

    def retry(self, job_id: str) -> Outcome | Refusal:
        """Replay a finished (failed, expired or completed) job with a fresh
        attempt budget, keeping its history. A job with a unique key takes it
        again; Refusal.UNIQUE_KEY_HELD: another unfinished job holds it, and
        nothing changes (replay that one's work, or wait for it to finish)."""
        code = self._by_id_code("retry", job_id)
        return Refusal.UNIQUE_KEY_HELD if code == -2 else _CODES[code]

    def _replay_codes(self, ids: Sequence[str]) -> list[int]:
        """retry.lua's code for each of ``ids``, one round trip per 500."""
        script = scripts.get("retry")
        k = self.keys
        codes: list[int] = []
        for start in range(0, len(ids), 500):
            calls = [
                (script, script.keys_for(k, job=k.job(i)), script.argv_for(now=self._now(), id=i))
                for i in ids[start : start + 500]
            ]
            codes += [int(code) for code in scripts.run_pipeline(self.client, calls)]
        return codes

    def replay(self, job_ids: Iterable[str]) -> int:
        """Replay finished jobs (one round trip per 500): each keeps its
        history. Returns how many were replayed (others were not finished, or
        another unfinished job holds their unique key: see retry())."""
        return sum(1 for code in self._replay_codes(list(job_ids)) if code == 1)

    def replay_failed(self, limit: int | None = None) -> int:
        """Replay the dead letter: every job on the failed list (oldest first),
        or the ``limit`` oldest. Reads the list in pages, never whole. Returns
        how many were replayed; replay_dead_letter() also says which were refused."""
        return self.replay_dead_letter(limit).replayed

    def replay_dead_letter(self, limit: int | None = None) -> ReplayReport:
        """replay_failed(), reporting the ids left on the failed list because
        another unfinished job holds their unique key."""
        report = ReplayReport()
        skipped = 0  # ids at the old end of the list that stay there
        while limit is None or report.replayed < limit:
            page = min(500, limit - report.replayed) if limit is not None else 500
            stop = -1 - skipped
            ids = list(reversed([_s(i) for i in self.client.lrange(self.keys.failed, stop - page + 1, stop)]))
            if not ids:
                break
            codes = self._replay_codes(ids)
            report.replayed += codes.count(1)
            report.refused += [i for i, code in zip(ids, codes, strict=True) if code == -2]
            # The ids not replayed (refused, or whose hash is gone or not
            # failed) stay at the old end of the list: the next page starts past them.
            skipped += len(codes) - codes.count(1)
        return report

    def unique_holder(self, unique_key: str) -> str | None:
        """The id of the unfinished job holding ``unique_key``, if any: the
        job enqueue() would return for that key now (two reads, not atomic)."""
        holder = self.client.hget(self.keys.unique, unique_key)
        if holder is None:
            return None
        status = self.client.hget(self.keys.job(_s(holder)), "status")
        return _s(holder) if status is not None and _s(status) in ("pending", "scheduled", "processing") else None

    # -------------------------------------------------------------------- scan

    def scan(self, state: str, cursor: int = 0, count: int = 100) -> tuple[int, list[str]]:
        """Iterate the ids of one state without loading the whole list
        (Disque's JSCAN): returns (next cursor, ids); the next cursor is 0 when
        done. The cursor is a position, oldest first for pending and newest first
        for the history lists; ids that move meanwhile may be seen twice or not
        at all, as with SCAN."""
        if count < 1:
            raise ValueError("count must be at least 1")
        k = self.keys
        if state == "scheduled":
            raw = self.client.zrange(k.scheduled, cursor, cursor + count - 1)
        elif state == "pending":
            # Oldest first: pending is consumed from the right.
            stop = -1 - cursor
            raw = list(reversed(self.client.lrange(k.pending, stop - count + 1, stop)))
        elif state in ("processing", "completed", "failed", "claiming"):
            raw = self.client.lrange(getattr(k, state), cursor, cursor + count - 1)
        else:
            raise ValueError(f"unknown state {state!r}: pending, scheduled, processing, completed, failed, claiming")
        ids = [_s(i) for i in raw]
        return (cursor + len(ids) if len(ids) == count else 0), ids

    # ------------------------------------------------------------------- pause

    def pause(self, direction: str = "all") -> str:
        """Pause enqueueing ("in"), claiming ("out") or both ("all"). Returns the new state."""
        return self._pause("pause", direction)

    def resume(self, direction: str = "all") -> str:
        """Undo pause() for that direction. Returns the new state ("none" when running)."""
        return self._pause("resume", direction)

    def _pause(self, action: str, direction: str) -> str:
        if direction not in ("in", "out", "all"):
            raise ValueError(f"direction must be 'in', 'out' or 'all', got {direction!r}")
        script = scripts.get("pause")
        return _s(script(self.client, script.keys_for(self.keys), script.argv_for(action=action, direction=direction)))

    def paused_state(self) -> str:
        """ "none", "in", "out" or "all"."""
        value = self.client.get(self.keys.paused)
        return _s(value) if value else "none"

    # ------------------------------------------------------------ maintenance

    def _reclaim_call(self, limit: int, workers: Sequence[str] = ()) -> tuple[scripts.Script, list[str], list[Any]]:
        script = scripts.get("reclaim")
        args = script.argv_for(
            now=self._now(),
            visibility_ms=self.visibility_ms,
            limit=limit,
            failed_ttl=self.failed_ttl_s,
            expired_ttl=self.expired_ttl_s(),
            worker_ids=workers,
        )
        return script, script.keys_for(self.keys), args

    def reclaim_stuck(self, limit: int = 1000) -> list[str]:
        """Move jobs whose lease ran out back to pending; returns their IDs.
        (Jobs whose attempts are used up are dead-lettered instead.)"""
        script, keys, args = self._reclaim_call(limit)
        reclaimed, _dead, _expired = script(self.client, keys, args)
        return [_s(i) for i in reclaimed]

    def reclaim_worker_jobs(self, worker_ids: Sequence[str]) -> list[str]:
        """Reclaim now every job of this queue that these (lost) workers hold;
        returns the ids back to pending (see take_back_worker_jobs)."""
        return self.take_back_worker_jobs(worker_ids).reclaimed

    def take_back_worker_jobs(self, worker_ids: Sequence[str]) -> SweepResult:
        """reclaim_worker_jobs(), with what became of each job: back to pending
        (``reclaimed``), dead-lettered (``dead_lettered``: attempts used up, or
        at-most-once and started: lost) or past its TTL (``expired``)."""
        script, keys, args = self._reclaim_call(0, worker_ids)
        reclaimed, dead, expired = script(self.client, keys, args)
        return SweepResult(
            reclaimed=[_s(i) for i in reclaimed],
            dead_lettered=[_s(i) for i in dead],
            expired=[_s(i) for i in expired],
        )

    def sweep(self, limit: int = 1000) -> SweepResult:
        """Promote due scheduled jobs, reclaim expired leases, expire TTLs,
        keep the completed and failed lists within their count bounds (at
        most ``limit`` ids off each): one round trip, each part atomic, each
        touching only what is due. Dead letters dropped past the bound are
        counted (``dropped_failed_total``) and logged."""
        k = self.keys
        promote, expire = scripts.get("promote"), scripts.get("expire")
        calls = [
            (promote, promote.keys_for(k), promote.argv_for(now=self._now(), limit=limit)),
            self._reclaim_call(limit),
            (
                expire,
                expire.keys_for(k),
                expire.argv_for(
                    now=self._now(),
                    limit=limit,
                    expired_ttl=self.expired_ttl_s(),
                    history=self.history,
                    failed_history=-1 if self.failed_history is None else self.failed_history,
                ),
            ),
        ]
        (promoted, next_due), (reclaimed, dead, ended), (expired, _dropped, _trimmed, lost_letters) = (
            scripts.run_pipeline(self.client, calls)
        )
        if lost_letters:
            ids = [_s(i) for i in lost_letters]
            logger.warning(
                "queue %s: %d dead letter(s) dropped, the oldest past FAILED_HISTORY (%s): %s%s",
                self.queue_name,
                len(ids),
                self.failed_history,
                " ".join(ids[:10]),
                " ..." if len(ids) > 10 else "",
            )
        return SweepResult(
            promoted=int(promoted),
            reclaimed=[_s(i) for i in reclaimed],
            dead_lettered=[_s(i) for i in dead],
            expired=[_s(i) for i in [*ended, *expired]],  # TTLs that passed while the jobs ran, and the others
            next_due_ms=None if int(next_due) < 0 else int(next_due),
        )

    # ----------------------------------------------------------------- reading

    def get_fields(self, job_id: str) -> dict[str, str] | None:
        """The job's hash as strings, or None if there is no such job."""
        raw = self.client.hgetall(self.keys.job(job_id))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    def progress(self, job_id: str) -> Progress | None:
        """The last progress the job's handler reported (``job.progress()``),
        or None when it reported none or there is no such job. Kept on the
        job after it ends; a retried job keeps its earlier run's until the new
        run reports (``Progress.attempt`` says which run)."""
        values = self.client.hmget(self.keys.job(job_id), PROGRESS_FIELDS)
        return Progress.from_fields(
            {name: None if v is None else _s(v) for name, v in zip(PROGRESS_FIELDS, values, strict=True)}
        )

    def stats(self) -> dict[str, Any]:
        """Depths and the shared counters (the seed's keys, and more)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(k.pending)
        pipe.llen(k.processing)
        pipe.llen(k.completed)
        pipe.llen(k.failed)
        pipe.zcard(k.scheduled)
        pipe.llen(k.claiming)
        pipe.hgetall(k.stats)
        pipe.lindex(k.pending, -1)
        pipe.get(k.paused)
        pending, processing, completed, failed, scheduled, claiming, counters, oldest, paused = pipe.execute()
        counters = {_s(a): int(b) for a, b in counters.items()}
        oldest_age_ms = None
        if oldest is not None:
            # The age on the clock the scripts stamped enqueued_at_ms with: the
            # queue's own when it has one, else the Redis server's (TIME), never
            # this machine's, which may be off. TIME rides with the HGET on one
            # Redis; a cluster pipeline refuses TIME, so there it is asked of the
            # node that holds the job (the one whose clock stamped it).
            job_key = k.job(_s(oldest))
            now = self._now()
            if now:
                enqueued = self.client.hget(job_key, "enqueued_at_ms")
            elif cluster.is_cluster(self.client):
                enqueued = self.client.hget(job_key, "enqueued_at_ms")
                seconds, micros = self.client.time(target_nodes=self.client.get_node_from_key(job_key))
                now = int(seconds) * 1000 + int(micros) // 1000
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.hget(job_key, "enqueued_at_ms")
                pipe.time()
                enqueued, (seconds, micros) = pipe.execute()
                now = int(seconds) * 1000 + int(micros) // 1000
            if enqueued is not None:
                oldest_age_ms = max(0, now - int(enqueued))
        out: dict[str, Any] = {
            "queue": self.queue_name,
            "pending_depth": pending,
            "processing_depth": processing + claiming,
            "completed_depth": completed,
            "failed_depth": failed,
            "scheduled_depth": scheduled,
            "visibility_ms": self.visibility_ms,
            "oldest_pending_age_ms": oldest_age_ms,
            "paused": _s(paused) if paused else "none",
        }
        for name in (
            "enqueued",
            "completed",
            "failed",
            "retried",
            "reclaimed",
            "expired",
            "deleted",
            "requeued",
            "deferred",
            "released",
            "replayed",
            "cancelled",
            "nacked",
            "lost",
            "orphans",
            "dropped_failed",
        ):
            out[f"{name}_total"] = counters.get(name, 0)
        return out
