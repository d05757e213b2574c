"""QueueOperations: what RedisJobQueue does to jobs by id and to the queue as a whole.

Deleting, requeueing, retrying and replaying jobs by id, scanning a state,
pausing and resuming, reclaiming and sweeping, and reading a job's fields and
the queue's stats. The admin, the shell commands and the worker's maintenance
thread call these; the enqueue -> claim -> finish path of a job does not (but
for claim() reading paused_state() on an empty queue), so they live apart from
that hot path (queue.py), as a mixin RedisJobQueue inherits: callers still see
one class. Every state change here is still one Lua script (atomic).

This module must not import queue.py (queue.py imports it): it works on the
attributes RedisJobQueue.__init__ sets, declared below for type checkers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import scripts
from .jobtypes import _CODES, ClaimedJob, Outcome, SweepResult, _s

if TYPE_CHECKING:
    from .keys import QueueKeys


class QueueOperations:
    """The by-id and whole-queue operations of RedisJobQueue (a mixin: use RedisJobQueue)."""

    # Set by RedisJobQueue.__init__.
    client: Any
    queue_name: str
    keys: QueueKeys
    visibility_ms: int
    failed_ttl_s: int

    if TYPE_CHECKING:

        def _now(self) -> int: ...

    # ------------------------------------------------------------------- by id

    def _by_id(self, script: str, job_id: str, keys: list[str], *args: str) -> Outcome:
        """Run a by-id script (KEYS: the job's hash, then ``keys``; ARGV: now,
        the id, then ``args``) and decode its code."""
        code = scripts.get(script)(self.client, [self.keys.job(job_id), *keys], [self._now(), job_id, *args])
        return _CODES[int(code)]

    def delete(self, job_id: str, claim_token: str = "") -> Outcome:
        """Delete a job. With a token only its current claim may; without one,
        any job that is not running."""
        k = self.keys
        return self._by_id(
            "delete",
            job_id,
            [
                k.pending,
                k.scheduled,
                k.processing,
                k.leases,
                k.completed,
                k.failed,
                k.deadlines,
                k.unique,
                k.stats,
                k.events,
                k.claiming,
                k.worker_jobs_prefix,
            ],
            claim_token,
        )

    def requeue_now(self, job_id: str) -> Outcome:
        """Put an unfinished job at the head of pending: a scheduled one runs
        now, a running one loses its claim and runs again. NOT_OWNER: finished."""
        k = self.keys
        return self._by_id(
            "requeue_now",
            job_id,
            [k.pending, k.scheduled, k.processing, k.leases, k.stats, k.events, k.worker_jobs_prefix],
        )

    def retry(self, job_id: str) -> Outcome:
        """Replay a finished (failed, expired or completed) job with a fresh
        attempt budget, keeping its history."""
        return self._by_id("retry", job_id, self._retry_keys())

    def _retry_keys(self) -> list[str]:
        """retry.lua's KEYS after the job's hash (retry() and replay() both send it)."""
        k = self.keys
        return [k.pending, k.completed, k.failed, k.stats, k.events, k.unique, k.deadlines]

    def replay(self, job_ids: Iterable[str]) -> int:
        """Replay finished jobs (one round trip per 500): each keeps its
        history. Returns how many were replayed (others were not finished)."""
        ids = list(job_ids)
        rest = self._retry_keys()
        done = 0
        for start in range(0, len(ids), 500):
            calls = [
                (scripts.get("retry"), [self.keys.job(i), *rest], [self._now(), i])
                for i in ids[start : start + 500]
            ]
            done += sum(1 for code in scripts.run_pipeline(self.client, calls) if int(code) == 1)
        return done

    def replay_failed(self, limit: int | None = None) -> int:
        """Replay the dead letter: every job on the failed list (oldest first),
        or the ``limit`` oldest. Reads the list in pages, never whole."""
        done = 0
        while limit is None or done < limit:
            page = min(500, limit - done) if limit is not None else 500
            ids = [_s(i) for i in self.client.lrange(self.keys.failed, -page, -1)]
            if not ids:
                break
            replayed = self.replay(reversed(ids))
            done += replayed
            if replayed == 0:
                break  # ids whose hash is gone or not failed: nothing more to do
        return done

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
        return _s(scripts.get("pause")(self.client, [self.keys.paused], [action, direction]))

    def paused_state(self) -> str:
        """ "none", "in", "out" or "all"."""
        value = self.client.get(self.keys.paused)
        return _s(value) if value else "none"

    # ------------------------------------------------------------ maintenance

    def _reclaim_call(self, limit: int, workers: Sequence[str] = ()) -> tuple[scripts.Script, list[str], list[Any]]:
        k = self.keys
        args: list[Any] = [self._now(), self.visibility_ms, limit, self.failed_ttl_s, *workers]
        return (
            scripts.get("reclaim"),
            [
                k.pending,
                k.processing,
                k.leases,
                k.claiming,
                k.unstamped,
                k.failed,
                k.deadlines,
                k.unique,
                k.stats,
                k.events,
                k.job_prefix,
                k.worker_jobs_prefix,
            ],
            args,
        )

    def reclaim_stuck(self, limit: int = 1000) -> list[str]:
        """Move jobs whose lease ran out back to pending; returns their IDs.
        (Jobs whose attempts are used up are dead-lettered instead.)"""
        script, keys, args = self._reclaim_call(limit)
        reclaimed, _dead = script(self.client, keys, args)
        return [_s(i) for i in reclaimed]

    def release_unanswered_claims(self, worker_id: str, tokens: Iterable[str]) -> list[str]:
        """Hand back to the head of pending, without using an attempt, the jobs
        that claims with these tokens took for ``worker_id`` but whose replies
        never reached it (a connection lost after a claim was sent). They are
        found through the worker's set of job ids and the claim token (the
        claim's own, or ``token.N`` for the Nth job of a batch); each is
        handed back by the token-checked requeue script, so a job since
        reclaimed and claimed by someone else is left alone. Returns the ids
        handed back."""
        tokens = set(tokens)
        ids = [_s(i) for i in self.client.smembers(self.keys.worker_jobs(worker_id))]
        if not ids or not tokens:
            return []
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "claim_token")
        released = []
        for job_id, held_by in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            held_by = _s(held_by) if isinstance(held_by, (str, bytes)) else ""
            if held_by.rpartition(".")[0] not in tokens and held_by not in tokens:
                continue
            claimed = ClaimedJob(id=job_id, payload=None, attempts=0, claim_token=held_by)
            outcome = self.requeue(claimed, count_attempt=False, front=True, event="released", counter="releases")
            if outcome is Outcome.OK:
                released.append(job_id)
        return released

    def reclaim_worker_jobs(self, worker_ids: Sequence[str]) -> list[str]:
        """Reclaim now every job of this queue that these (lost) workers hold."""
        script, keys, args = self._reclaim_call(0, worker_ids)
        reclaimed, _dead = script(self.client, keys, args)
        return [_s(i) for i in reclaimed]

    def sweep(self, limit: int = 1000) -> SweepResult:
        """Promote due scheduled jobs, reclaim expired leases, expire TTLs:
        one round trip, each part atomic, each touching only what is due."""
        k = self.keys
        calls = [
            (scripts.get("promote"), [k.scheduled, k.pending, k.events, k.job_prefix], [self._now(), limit]),
            self._reclaim_call(limit),
            (
                scripts.get("expire"),
                [
                    k.deadlines,
                    k.pending,
                    k.scheduled,
                    k.processing,
                    k.leases,
                    k.unique,
                    k.stats,
                    k.events,
                    k.completed,
                    k.failed,
                    k.job_prefix,
                    k.worker_jobs_prefix,
                    k.claiming,
                    k.unstamped,
                ],
                [self._now(), limit, self.failed_ttl_s],
            ),
        ]
        (promoted, next_due), (reclaimed, dead), (expired, _dropped) = scripts.run_pipeline(self.client, calls)
        return SweepResult(
            promoted=int(promoted),
            reclaimed=[_s(i) for i in reclaimed],
            dead_lettered=[_s(i) for i in dead],
            expired=[_s(i) for i in expired],
            next_due_ms=None if int(next_due) < 0 else int(next_due),
        )

    # ----------------------------------------------------------------- reading

    def get_fields(self, job_id: str) -> dict[str, str] | None:
        """The job's hash as strings, or None if there is no such job."""
        raw = self.client.hgetall(self.keys.job(job_id))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

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
            enqueued = self.client.hget(k.job(_s(oldest)), "enqueued_at_ms")
            if enqueued is not None:
                oldest_age_ms = max(0, int(time.time() * 1000) - int(enqueued))
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
            "nacked",
            "lost",
            "orphans",
        ):
            out[f"{name}_total"] = counters.get(name, 0)
        return out
