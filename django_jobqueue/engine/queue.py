"""RedisJobQueue: the seed's engine, as thin typed wrappers over the Lua scripts.

This module knows nothing of Django: it takes a redis-py client and plain
values, so it can be used (and tested) on its own. Every state change is one
Lua script (atomic); every change after a claim checks the claim token.

Here is the path every job takes (enqueue, claim, complete, fail, touch,
requeue). Operations on jobs by id and on the whole queue are in queue_ops.py
(QueueOperations, which RedisJobQueue extends); the values they return
(Outcome, ClaimedJob, SweepResult) are in replies.py.

Payloads and results are plain JSON here (``json_encoder``);
``django_jobqueue.queue.RedisJobQueue``, what users import, encodes them as
Django's JSON encoder does.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from . import direct, scripts
from .errortext import cap_error, cap_traceback
from .exceptions import QueuePaused, ReplicationError
from .ids import check_job_id, new_claim_token, new_job_id
from .progress import check_fraction, check_message, fraction_text
from .queue_ops import QueueOperations
from .replies import _CODES, _FAIL_CODES, _START_CODES, ClaimedJob, Outcome, _is_paused, _pairs, _s, limited_wait_ms

logger = logging.getLogger("django_jobqueue")

# Bulk enqueue sends this many scripts per pipeline: large enough to amortise
# the round trip, small enough to keep Redis responsive to other clients.
BULK_CHUNK = 1000
# Jobs per enqueue_many.lua call: one call holds Redis for its whole batch, so
# batches stay small (about a millisecond); a round trip carries several.
BULK_SCRIPT_JOBS = 100
# Claim blocks at most this long per BLMOVE, so a worker loop notices a
# shutdown request (and runs its sweep) at least this often.
MAX_BLOCK_MS = 2000
# A claim on a queue paused for claiming waits this long before saying "nothing".
PAUSED_WAIT_MS = 500


def _ids_added(batches: Sequence[Sequence[tuple[str, str]]], replies: list[Any]) -> list[str]:
    """The ids of the jobs that enqueue_many.lua calls added: per batch (id,
    payload JSON) each, its reply one code per job, or -1 (paused: none)."""
    return [
        job_id
        for batch, codes in zip(batches, replies, strict=True)
        if codes != -1
        for (job_id, _text), code in zip(batch, codes, strict=True)
        if code == 1
    ]


class RedisJobQueue(QueueOperations):
    """One queue on one Redis: the seed's operations plus scheduling, TTLs and
    leases. Made with the arguments of QueueCore (queue_core.py)."""

    # ------------------------------------------------------------------ enqueue

    def _enqueue_call(
        self,
        payload_json: str,
        *,
        job_id: str | None = None,
        name: str = "",
        delay_ms: int = 0,
        ttl_ms: int = 0,
        unique_key: str = "",
        max_attempts: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[scripts.Script, list[str], list[Any]]:
        k = self.keys
        job_id = new_job_id(self.clock() if self.clock else None) if job_id is None else check_job_id(job_id)
        script = scripts.get("enqueue")
        args = script.argv_for(
            now=self._now(),
            id=job_id,
            delay_ms=int(delay_ms),
            ttl_ms=int(ttl_ms),
            unique_key=unique_key,
            queue=self.queue_name,
            name=name,
            payload=payload_json,
            max_attempts=self.max_attempts if max_attempts is None else int(max_attempts),
            extra=[item for pair in extra.items() for item in pair] if extra else (),
        )
        return script, script.keys_for(k, job=k.job(job_id)), args

    def enqueue(self, payload: Any, **options: Any) -> str:
        """Add a job (one round trip). Returns its ID, or the ID of the
        unfinished job already holding ``unique_key``.

        Options: name, delay_ms, ttl_ms, unique_key, max_attempts, extra
        (more hash fields), job_id (chosen by the caller: ids.JOB_ID_RULE,
        else InvalidJobOptions and nothing is written).
        """
        return self.enqueue_encoded(self.encode(payload), **options)

    def enqueue_encoded(
        self, payload_json: str, *, replicas: int = 0, replication_timeout_ms: int = 1000, **options: Any
    ) -> str:
        """enqueue() for a payload already encoded (and size-checked) as JSON.

        With ``replicas=W`` the call returns only once W replicas acknowledged
        the write (Redis WAIT, up to ``replication_timeout_ms``), else raises
        ReplicationError: the job stays enqueued, but is not yet safe.
        """
        call = self._enqueue_call(payload_json, **options)
        script, keys, args = call
        job_id = str(args[1])  # ARGV[2]: the id, chosen or checked by _enqueue_call
        if replicas:
            (reply,) = self._write_and_wait(
                [call], replicas, replication_timeout_ms, lambda results: [job_id] if results[0] == 1 else []
            )
        else:
            reply = script.call_idempotent(self.client, keys, args)
        return self.enqueued(reply, job_id)

    def enqueued(self, reply: Any, job_id: str) -> str:
        """What an enqueue.lua call (for ``job_id``) replied, as enqueue()
        returns it: its id, the id of the unfinished job holding its unique
        key, or QueuePaused."""
        # enqueue.lua: 1 added, -1 paused, else [0, the id of the job that is there]
        if reply == 1:
            return job_id
        if reply == -1:
            raise QueuePaused(f"queue {self.queue_name!r} is paused for enqueueing")
        return _s(reply[1])

    def _write_and_wait(
        self,
        calls: Sequence[tuple[scripts.Script, Sequence[str], Sequence[Any]]],
        replicas: int,
        timeout_ms: int,
        written: Callable[[list[Any]], list[str]],
    ) -> list[Any]:
        """Run script calls, then WAIT on the same connection (a pipeline is one
        connection), so WAIT covers exactly these writes. ``written``: the ids
        of the jobs the calls added, from their replies (for the error)."""
        results, acked = scripts.run_pipeline_and_wait(self.client, calls, replicas, timeout_ms)
        self.check_replicated(written(results), acked, replicas, timeout_ms)
        return results

    def check_replicated(self, ids: list[str], acked: int, replicas: int, timeout_ms: int) -> None:
        """ReplicationError when fewer than ``replicas`` acknowledged the writes of ``ids``."""
        if acked < replicas:
            raise ReplicationError(
                f"{len(ids)} job(s) written to {self.queue_name!r} but only {acked} of {replicas} replica(s) "
                f"acknowledged within {timeout_ms} ms; the jobs stay queued",
                ids,
                acked,
                replicas,
            )

    def enqueue_many(
        self,
        payloads: Iterable[Any],
        *,
        name: str = "",
        delay_ms: int = 0,
        ttl_ms: int = 0,
        max_attempts: int | None = None,
        extra: Mapping[str, str] | None = None,
        replicas: int = 0,
        replication_timeout_ms: int = 1000,
    ) -> list[str]:
        """Add many jobs, pipelined in chunks. Every payload is encoded (and
        checked) before anything is written; each job is added atomically."""
        ids: list[str] = []
        plan = self.bulk_plan(
            payloads, name=name, delay_ms=delay_ms, ttl_ms=ttl_ms, max_attempts=max_attempts, extra=extra
        )
        for batches, calls in plan:
            if replicas:
                results = self._write_and_wait(
                    calls, replicas, replication_timeout_ms, functools.partial(_ids_added, batches)
                )
            else:
                results = scripts.run_pipeline(self.client, calls)
            self.bulk_written(batches, results, ids)
        return ids

    def bulk_plan(
        self,
        payloads: Iterable[Any],
        *,
        name: str,
        delay_ms: int,
        ttl_ms: int,
        max_attempts: int | None,
        extra: Mapping[str, str] | None,
    ) -> list[tuple[list[list[tuple[str, str]]], list[tuple[scripts.Script, list[str], list[Any]]]]]:
        """enqueue_many()'s writes, every payload encoded (and checked) first:
        per round trip, its batches ((id, payload JSON) each) and their
        enqueue_many.lua calls."""
        encoded = [self.encode(p) for p in payloads]
        now = self.clock() if self.clock else None
        jobs = [(new_job_id(now), text) for text in encoded]
        plan = []
        for start in range(0, len(jobs), BULK_CHUNK):
            chunk = jobs[start : start + BULK_CHUNK]
            batches = [chunk[i : i + BULK_SCRIPT_JOBS] for i in range(0, len(chunk), BULK_SCRIPT_JOBS)]
            calls = [
                self._enqueue_many_call(
                    batch, name=name, delay_ms=delay_ms, ttl_ms=ttl_ms, max_attempts=max_attempts, extra=extra
                )
                for batch in batches
            ]
            plan.append((batches, calls))
        return plan

    def bulk_written(
        self, batches: Sequence[Sequence[tuple[str, str]]], results: Sequence[Any], ids: list[str]
    ) -> None:
        """Add to ``ids`` the jobs a round trip of bulk_plan() wrote; QueuePaused
        (with the ids written so far) when a batch found the queue paused."""
        for batch, codes in zip(batches, results, strict=True):
            if codes == -1:  # paused: this batch wrote nothing
                exc = QueuePaused(f"queue {self.queue_name!r} is paused for enqueueing ({len(ids)} job(s) written)")
                exc.job_ids = ids  # type: ignore[attr-defined]
                raise exc
            ids += [job_id for job_id, _text in batch]

    def _enqueue_many_call(
        self,
        batch: Sequence[tuple[str, str]],
        *,
        name: str,
        delay_ms: int,
        ttl_ms: int,
        max_attempts: int | None,
        extra: Mapping[str, str] | None,
    ) -> tuple[scripts.Script, list[str], list[Any]]:
        """One enqueue_many.lua call adding ``batch``: (id, payload JSON) each."""
        script = scripts.get("enqueue_many")
        pairs = list((extra or {}).items())
        tail: list[Any] = [item for pair in pairs for item in pair]
        for job_id, text in batch:
            tail += (job_id, text)
        args = script.argv_for(
            now=self._now(),
            delay_ms=int(delay_ms),
            ttl_ms=int(ttl_ms),
            queue=self.queue_name,
            name=name,
            max_attempts=self.max_attempts if max_attempts is None else int(max_attempts),
            extra_count=len(pairs),
            extra_and_jobs=tail,
        )
        return script, script.keys_for(self.keys), args

    # -------------------------------------------------------------------- claim

    def _claim_keys(self) -> list[str]:
        """claim.lua's KEYS, which stamp.lua shares."""
        return scripts.get("claim").keys_for(self.keys)

    def claim_nowait(
        self,
        worker_id: str = "",
        *,
        lease_ms: int | None = None,
        token: str | None = None,
        defer_last_chance: bool = False,
    ) -> ClaimedJob | None:
        """Claim the next pending job, if any, in one round trip (promoting due
        scheduled jobs first). ``token``: the claim token (default: a new one).
        ``defer_last_chance``: a run that is the job's only chance (at-most-once,
        or its last attempt) is not started by the claim; the caller starts it
        (:meth:`start`) right before it calls the handler.
        None also when the queue is paused for claiming, or its flow limits let
        no job out now."""
        return self._claim_once(worker_id, lease_ms=lease_ms, token=token, defer_last_chance=defer_last_chance)[0]

    def _claim_once(
        self,
        worker_id: str,
        *,
        lease_ms: int | None,
        token: str | None,
        defer_last_chance: bool,
    ) -> tuple[ClaimedJob | None, int | None]:
        """claim_nowait(), and what limited_wait_ms() read in its reply (None:
        not limited)."""
        script = scripts.get("claim")
        args = script.argv_for(
            now=self._now(),
            claim_token=token or new_claim_token(),
            visibility_ms=self.visibility_ms if lease_ms is None else lease_ms,
            worker_id=worker_id,
            promote_limit=100,
            expired_ttl=self.expired_ttl_s(),
            count=0,  # one job, its hash unnested
            start="",
            defer_last_chance="1" if defer_last_chance else "",
            **self.limits.argv(),
        )
        res = script(self.client, script.keys_for(self.keys), args)
        wait = limited_wait_ms(res)
        if wait is not None or _is_paused(res):
            return None, wait
        return (ClaimedJob.from_fields(_pairs(res)) if res else None), None

    def claim_many(
        self, count: int, worker_id: str = "", *, lease_ms: int | None = None, start: int | None = None
    ) -> list[ClaimedJob]:
        """Claim up to ``count`` pending jobs in one script call, without
        blocking (each gets its own claim token and lease).

        ``start``: how many of them (the first) start now, each using an
        attempt; the others are claimed ahead for runners not yet free and
        use none until :meth:`start` (or their completion or failure) says
        their run began. If their worker dies first they go back to pending
        as they were. None: all start now."""
        if count < 1:
            return []
        script, keys, args = self.claim_many_call(count, worker_id, lease_ms=lease_ms, start=start)
        return self.parse_claim_many(script(self.client, keys, args))

    def claim_many_call(
        self,
        count: int,
        worker_id: str = "",
        *,
        lease_ms: int | None = None,
        start: int | None = None,
        defer_last_chance: bool = False,
        token: str | None = None,
        claim_ahead: bool = False,
    ) -> tuple[scripts.Script, list[str], list[Any]]:
        """The script call behind claim_many(), for batching in a pipeline
        (``defer_last_chance``: as claim_nowait's). ``token``: the call's claim
        token (ids.new_claim_token; each job's own is made from it), for a
        caller that hands the claim back when its reply is lost.
        ``claim_ahead``: the caller's jobs are short, so on a queue with a
        global concurrency alone the jobs past ``start`` may be claimed ahead
        (claim.lua); otherwise a limited queue gives only those that start."""
        script = scripts.get("claim")
        args = script.argv_for(
            now=self._now(),
            claim_token=new_claim_token() if token is None else token,
            visibility_ms=self.visibility_ms if lease_ms is None else lease_ms,
            worker_id=worker_id,
            promote_limit=100,
            expired_ttl=self.expired_ttl_s(),
            count=int(count),
            start="" if start is None else int(start),
            defer_last_chance="1" if defer_last_chance else "",
            **self.limits.argv(),
            claim_ahead="1" if claim_ahead else "",
        )
        return script, script.keys_for(self.keys), args

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

    def start(self, jobs: Sequence[ClaimedJob]) -> list[Outcome]:
        """Say that the runs of jobs claimed ahead begin now (one attempt
        each): OK, EXPIRED (its TTL passed while it waited: it ended
        "expired" and must not run), or NOT_OWNER / MISSING (no longer ours)."""
        if not jobs:
            return []
        script, keys, args = self.start_call(jobs)
        return self.start_outcomes(script(self.client, keys, args))

    def start_call(self, jobs: Sequence[ClaimedJob]) -> tuple[scripts.Script, list[str], list[Any]]:
        """The script call behind start(), for batching in a pipeline (its
        reply: one code per job, read with :meth:`start_outcomes`)."""
        script = scripts.get("start")
        tail: list[Any] = []
        for job in jobs:
            tail += (job.id, job.claim_token)
        args = script.argv_for(now=self._now(), expired_ttl=self.expired_ttl_s(), jobs=tail)
        return script, script.keys_for(self.keys), args

    @staticmethod
    def start_outcomes(codes: Sequence[Any]) -> list[Outcome]:
        return [_START_CODES[int(code)] for code in codes]

    @staticmethod
    def parse_claim_many(reply: Any) -> list[ClaimedJob]:
        if not reply or _is_paused(reply) or limited_wait_ms(reply) is not None:
            return []
        jobs = []
        for job in reply:
            if isinstance(job, list):
                jobs.append(ClaimedJob.from_fields(_pairs(job)))
            else:  # a job key of the wrong type, dropped by the claim (claim.lua)
                logger.error("claim: %s", _s(job))
        return jobs

    def complete_many(self, finished: Sequence[tuple[ClaimedJob, Any, bool]]) -> list[Outcome]:
        """Complete several claimed jobs in one round trip: (job, result,
        keep_result) each, results already JSON-checked or not. Each completion
        is its own atomic, token-checked script."""
        if not finished:
            return []
        batch = [(job, self.encode(result, what="result"), keep) for job, result, keep in finished]
        script, keys, args = self.complete_batch_call(batch)
        return self.outcomes(script(self.client, keys, args))

    def claim(
        self,
        timeout_ms: int = 1000,
        worker_id: str = "",
        *,
        lease_ms: int | None = None,
        token: str | None = None,
        defer_last_chance: bool = False,
    ) -> ClaimedJob | None:
        """Claim the next pending job, blocking up to ``timeout_ms`` for one.

        Under load this is one script call. On an empty queue it blocks in
        BLMOVE (pending -> claiming), with the stamp script queued right behind
        it on the same connection (one round trip; two in cluster mode, where
        the stamp is sent once BLMOVE has returned). A worker dying between the
        two leaves the id on the claiming list, where the reclaim sweep finds it.
        ``token``: the claim token (default: a new one), known to the caller
        so that it can find the job if the reply is lost.
        """
        token = token or new_claim_token()
        claim_once = functools.partial(
            self._claim_once, worker_id, lease_ms=lease_ms, token=token, defer_last_chance=defer_last_chance
        )
        job, limited = claim_once()
        if job is not None or timeout_ms <= 0:
            return job
        if limited is None and self.paused_state() in ("out", "all"):
            # Paused for claiming: wait a little (not in BLMOVE, which would
            # take a job) so callers looping on claim() do not spin.
            time.sleep(min(timeout_ms, PAUSED_WAIT_MS) / 1000)
            return None
        lease = self.visibility_ms if lease_ms is None else lease_ms
        deadline = time.monotonic() + max(timeout_ms, 100) / 1000
        while (left := deadline - time.monotonic()) > 0:
            if limited is not None:
                # Jobs wait, but the flow limits let none out now: wait for
                # room (one blocking call), then claim again.
                self.wait_for_room(limited, int(left * 1000))
            else:
                block_s = max(0.1, min(left, MAX_BLOCK_MS / 1000))
                moved, res = self._block_and_stamp(block_s, lease, worker_id, token, defer_last_chance)
                if _is_paused(res):
                    return None
                limited = limited_wait_ms(res)
                if limited is not None:
                    continue  # the id went back to the head of pending: room first
                if res:
                    return ClaimedJob.from_fields(_pairs(res))
                if not moved:
                    return None
                # Not ours to run (dropped orphan, expired, or reclaimed
                # meanwhile): look again without blocking, then block for
                # what is left.
            job, limited = claim_once()
            if job is not None:
                return job
        return None

    def wait_for_room(self, wait_ms: int, timeout_ms: int) -> None:
        """Wait until the queue's flow limits may let a job out: ``wait_ms``
        (what a claim said: until the rate allows one), or, when that is 0, until
        a claim holding a slot of the global concurrency ends (its script wakes
        one waiter, see keys.py slots_freed), at most ``timeout_ms`` and
        MAX_BLOCK_MS. One blocking call: no polling meanwhile."""
        limit = min(timeout_ms, MAX_BLOCK_MS)
        block_ms = min(wait_ms, limit) if wait_ms > 0 else limit
        if block_ms <= 0:
            return
        # BLPOP takes seconds, with a resolution of 1 ms (Redis 6+).
        self.client.blpop([self.keys.slots_freed], timeout=max(block_ms, 1) / 1000)

    def _block_and_stamp(
        self, block_s: float, lease: int, worker_id: str, token: str, defer_last_chance: bool = False
    ) -> tuple[bool, Any]:
        """BLMOVE, then stamp.lua: (whether BLMOVE moved an id, the stamp's reply)."""
        k = self.keys
        stamp = scripts.get("stamp")
        keys = stamp.keys_for(k)
        argv = functools.partial(
            stamp.argv_for,
            now=self._now(),
            claim_token=token,
            visibility_ms=lease,
            worker_id=worker_id,
            expired_ttl=self.expired_ttl_s(),
            defer_last_chance="1" if defer_last_chance else "0",
            **self.limits.argv(),
        )
        if direct.can_send_direct(self.client):
            # The stamp without an id takes the head of claiming: the id this
            # BLMOVE moved, since Redis runs it right after, before any other
            # client's command (stamp.lua says why any id there would do).
            moved, res = direct.send_direct(
                self.client,
                [
                    ("BLMOVE", k.pending, k.claiming, "RIGHT", "LEFT", block_s),
                    ("EVALSHA", stamp.sha, len(keys), *keys, *argv(job_id="")),
                ],
            )
            if isinstance(res, NoScriptError):
                res = stamp(self.client, keys, argv(job_id=""))
            if res and not isinstance(res, Exception):
                return True, res  # a job stamped for us: ours to run, whatever BLMOVE said
            for reply in (moved, res):
                if isinstance(reply, Exception):
                    raise reply
            return moved is not None, res
        job_id = self.client.blmove(k.pending, k.claiming, block_s, "RIGHT", "LEFT")
        if job_id is None:
            return False, None
        return True, stamp(self.client, keys, argv(job_id=_s(job_id)))

    # ------------------------------------------------------- after-claim changes

    def complete_call(
        self, job: ClaimedJob, result: Any, keep_result: bool = True, *, result_json: str | None = None
    ) -> tuple[scripts.Script, list[str], list[Any]]:
        """The script call that completes ``job``, for callers that batch calls
        in one pipeline (scripts.run_pipeline); its reply is a list of one code.
        ``result_json``: the result, already encoded and size-checked."""
        if result_json is None:
            result_json = self.encode(result, what="result")
        return self.complete_batch_call([(job, result_json, keep_result)])

    def complete_batch_call(
        self, finished: Sequence[tuple[ClaimedJob, str, bool]], started: Sequence[ClaimedJob] = ()
    ) -> tuple[scripts.Script, list[str], list[Any]]:
        """One script call completing several jobs: (job, result JSON already
        size-checked, keep_result) each. Each job is token-checked on its own;
        the reply is one code per job (parse with :meth:`outcomes`), then one
        per job of ``started``: jobs claimed ahead whose runs began (what
        :meth:`start` records, riding on this call)."""
        script = scripts.get("complete")
        tail: list[Any] = []
        for job, result_json, keep in finished:
            tail += (job.id, job.claim_token, result_json, "1" if keep else "0")
        for job in started:
            tail += (job.id, job.claim_token, "", "s")
        args = script.argv_for(
            now=self._now(),
            completed_ttl=self.completed_ttl_s,
            history=self.history,
            result_event_bytes=self.result_event_bytes,
            jobs=tail,
        )
        return script, script.keys_for(self.keys), args

    def end_cancelled(self, job: ClaimedJob, *, ran: bool) -> Outcome:
        """End a claimed job whose cancellation was asked (or whose handler
        raised JobCancelled): status ``cancelled``, no result, token-checked
        (complete.lua). ``ran``: its handler ran (its attempt counts); else it
        was never started (no attempt used)."""
        script = scripts.get("complete")
        args = script.argv_for(
            now=self._now(),
            completed_ttl=self.completed_ttl_s,
            history=self.history,
            result_event_bytes=self.result_event_bytes,
            jobs=[job.id, job.claim_token, "", "c" if ran else "n"],
        )
        return self.outcomes(script(self.client, script.keys_for(self.keys), args))[0]

    @staticmethod
    def outcomes(codes: Sequence[Any]) -> list[Outcome]:
        """The Outcome of each job of a complete_batch_call() reply."""
        return [_CODES[int(code)] for code in codes]

    def complete_outcome(self, job: ClaimedJob, result: Any = None, *, keep_result: bool = True) -> Outcome:
        script, keys, args = self.complete_call(job, result, keep_result)
        return self.outcomes(script(self.client, keys, args))[0]

    def complete(self, job: ClaimedJob, result: Any = None) -> bool:
        """Mark the job completed with ``result``. False: the claim is no longer ours."""
        return self.complete_outcome(job, result) is Outcome.OK

    def fail_outcome(
        self,
        job: ClaimedJob,
        error: str,
        *,
        traceback: str = "",
        retry_delay_ms: int = 0,
        terminal: bool = False,
        lost: bool = False,
    ) -> Outcome:
        """Record a failure (see :meth:`fail`); ``error`` and ``traceback``
        are capped first (errortext.py), whoever the caller is."""
        code = self._on_claim(
            "fail",
            job,
            error=cap_error(str(error)),
            traceback=cap_traceback(traceback),
            retry_delay_ms=int(retry_delay_ms),
            mode="lost" if lost else "terminal" if terminal else "auto",
            failed_ttl=self.failed_ttl_s,
        )
        return _FAIL_CODES[code]

    def _on_claim(self, name: str, job: ClaimedJob, **argv: Any) -> int:
        """Run script ``name`` on one claimed job, checked against its claim
        token (KEYS: the job's hash and the queue's keys; ARGV: now, the id,
        the token, then ``argv`` by name); its reply code."""
        script = scripts.get(name)
        keys = script.keys_for(self.keys, job=self.keys.job(job.id))
        args = script.argv_for(now=self._now(), id=job.id, claim_token=job.claim_token, **argv)
        return int(script(self.client, keys, args))

    def fail(self, job: ClaimedJob, error: str, **options: Any) -> bool:
        """Record a failure: retried while attempts remain, else dead-lettered.
        False: the claim is no longer ours."""
        return self.fail_outcome(job, error, **options) in (Outcome.RETRYING, Outcome.FAILED)

    def touch(self, job: ClaimedJob, lease_ms: int | None = None) -> int | None:
        """Extend the lease (never past the TTL). Returns the new deadline in
        ms, or None when the claim is no longer ours."""
        res = self._on_claim("touch", job, lease_ms=self.visibility_ms if lease_ms is None else lease_ms)
        return res if res > 0 else None

    def report_progress(self, job: ClaimedJob, fraction: float, message: str | None = None) -> Outcome:
        """Record how far a claimed job's run has got (progress.lua): a
        fraction from 0 to 1 (TypeError or ValueError otherwise, before any
        call) and a message (None: none; capped). A ``progress`` event is
        published. Outcome.NOT_OWNER: the claim is no longer ours, nothing changed.
        Every call writes: a handler's ``job.progress()`` limits how often."""
        value = check_fraction(fraction)
        code = self._on_claim("progress", job, fraction=fraction_text(value), message=check_message(message))
        return _CODES[code]

    def touch_many(self, jobs: Sequence[ClaimedJob], lease_ms: int | None = None) -> list[int | None | Exception]:
        """touch() for several jobs in one pipeline: per job, the new deadline,
        None when the claim is no longer ours, or the error of that call
        (a node down, a key of the wrong type)."""
        k = self.keys
        lease = self.visibility_ms if lease_ms is None else lease_ms
        script = scripts.get("touch")
        now = self._now()
        calls = [
            (
                script,
                script.keys_for(k, job=k.job(job.id)),
                script.argv_for(now=now, id=job.id, claim_token=job.claim_token, lease_ms=lease),
            )
            for job in jobs
        ]
        replies = scripts.run_pipeline(self.client, calls, retry=False, raise_on_error=False)
        return [r if isinstance(r, Exception) else (int(r) if int(r) > 0 else None) for r in replies]

    def requeue(
        self,
        job: ClaimedJob,
        *,
        delay_ms: int = 0,
        count_attempt: bool = True,
        front: bool = False,
        event: str = "requeued",
        counter: str = "",
        error: str | None = None,
    ) -> Outcome:
        """Put a claimed job back to wait (now, or after ``delay_ms``);
        ``error`` (a nack's reason) is capped like a failure's."""
        code = self._on_claim(
            "requeue",
            job,
            delay_ms=int(delay_ms),
            count_attempt="1" if count_attempt else "0",
            place="front" if front else "back",
            event=event,
            counter=counter,
            error=cap_error(error) if error else "",
            failed_ttl=self.failed_ttl_s,
        )
        return _FAIL_CODES[code] if code == 2 else _CODES[code]
