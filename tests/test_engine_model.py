"""The engine against a model: a hypothesis state machine.

Random sequences of enqueue (with delay, ttl, unique_key), claim, complete,
fail, requeue and nack, touch, delete, retry, sweeps and reclaims, workers that
die between BLMOVE and their stamp, late stamps, stale-token calls and clock
jumps are run against ``RedisJobQueue`` on the test suite's private
redis-server (a clock injected, so time moves only when the machine says so)
and against a small Python model of what each call should do.

After every step the whole keyspace is read back and checked:

* each job id is in exactly one place: the scheduled set, the pending list (or
  the claiming list a dead worker's BLMOVE left it on), the processing list, or
  a terminal status (completed / failed, on their history lists unless trimmed;
  expired; deleted, which leaves nothing);
* lists, sets and counters equal the model's, entry for entry and in order;
* attempts only grow (a nack, deferral or hand-back gives back exactly the
  attempt it made; a replay of a finished job starts again from 0);
* no lease and no worker-set entry without its job in processing;
* counters add up: enqueued + replayed = unfinished + completed + failed +
  expired + deleted-while-unfinished;
* every terminal hash has a TTL where CLEANUP says so, and no unfinished one has;
* a call with a stale token changes nothing at all (checked on a full dump of
  the keyspace before and after).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from django_jobqueue import scripts
from django_jobqueue.ids import new_claim_token
from django_jobqueue.queue import ClaimedJob, Outcome, RedisJobQueue
from tests.test_engine import Clock

VISIBILITY = 5000
HISTORY = 3
COMPLETED_TTL = 3600
FAILED_TTL = 7200
UNFINISHED = ("scheduled", "pending", "processing")
TERMINAL = ("completed", "failed", "expired")
K = "queue:jobs:"


@dataclass
class MJob:
    id: str
    status: str
    max_attempts: int
    expires_at: int | None
    unique: str
    attempts: int = 0
    token: str = ""
    worker: str = ""
    nacks: int = 0
    additional_deliveries: int = 0
    replays: int = 0


@dataclass
class Model:
    jobs: dict[str, MJob] = field(default_factory=dict)
    # Lists as Redis holds them: index 0 is the left end (LPUSH side).
    pending: list[str] = field(default_factory=list)
    claiming: list[str] = field(default_factory=list)
    processing: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    scheduled: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    deadlines: dict[str, int] = field(default_factory=dict)
    unique: dict[str, str] = field(default_factory=dict)
    unstamped: dict[str, int] = field(default_factory=dict)
    stats: collections.Counter = field(default_factory=collections.Counter)
    deleted_terminal: int = 0


class EngineMachine(RuleBasedStateMachine):
    """One queue, one model. Claims are kept (current and stale) for later steps."""

    client: redis.Redis  # set by the test below, before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.r = type(self).client
        self.r.flushall()
        self.clock = Clock()
        self.q = RedisJobQueue(
            self.r,
            "jobs",
            visibility_ms=VISIBILITY,
            max_attempts=3,
            history=HISTORY,
            completed_ttl_s=COMPLETED_TTL,
            failed_ttl_s=FAILED_TTL,
            clock=self.clock,
        )
        self.m = Model()
        self.current: dict[str, ClaimedJob] = {}  # job id -> the claim that holds it
        self.stale: list[ClaimedJob] = []  # claims that no longer hold their job
        self.attempts_seen: dict[str, int] = {}
        self.gave_back: set[str] = set()  # jobs allowed to have fewer attempts after this step
        self.made = 0

    # ------------------------------------------------------------ model helpers

    def now(self) -> int:
        return self.clock()

    def _drop_claim(self, job_id: str) -> None:
        claim = self.current.pop(job_id, None)
        if claim is not None:
            self.stale.append(claim)

    def _lrem(self, lst: list[str], job_id: str, count: int) -> None:
        """LREM with count 1 (from the left) or -1 (from the right)."""
        idx = range(len(lst)) if count > 0 else range(len(lst) - 1, -1, -1)
        for i in idx:
            if lst[i] == job_id:
                del lst[i]
                return

    def _release_unique(self, job: MJob) -> None:
        if job.unique and self.m.unique.get(job.unique) == job.id:
            del self.m.unique[job.unique]

    def _leave_processing(self, job: MJob) -> None:
        self._lrem(self.m.processing, job.id, -1)
        self.m.leases.pop(job.id, None)
        job.token = ""
        self._drop_claim(job.id)

    def _promote(self, limit: int) -> int:
        due = sorted((at, jid) for jid, at in self.m.scheduled.items() if at <= self.now())[:limit]
        for _at, jid in due:
            del self.m.scheduled[jid]
            self.m.jobs[jid].status = "pending"
            self.m.pending.insert(0, jid)
        return len(due)

    def _stamp(self, jid: str, worker: str) -> MJob | None:
        """The model of _stamp.lua: the id sits at the head of processing."""
        job = self.m.jobs[jid]
        if job.status != "pending":
            self._lrem(self.m.processing, jid, 1)
            return None
        if job.expires_at is not None and job.expires_at <= self.now():
            self._lrem(self.m.processing, jid, 1)
            self.m.deadlines.pop(jid, None)
            self._release_unique(job)
            job.status = "expired"
            self.m.stats["expired"] += 1
            return None
        job.attempts += 1
        job.status = "processing"
        job.worker = worker
        self.m.leases[jid] = self.now() + VISIBILITY
        return job

    def _give_back(self, job: MJob) -> str:
        """reclaim.lua's give_back: dead letter when attempts are used up."""
        if job.max_attempts > 0 and job.attempts >= job.max_attempts:
            job.status = "failed"
            self.m.deadlines.pop(job.id, None)
            self._release_unique(job)
            self.m.failed.insert(0, job.id)
            self.m.stats["failed"] += 1
            return "dead"
        job.status = "pending"
        job.additional_deliveries += 1
        self.m.pending.append(job.id)
        self.m.stats["reclaimed"] += 1
        return "reclaimed"

    def _reclaim(self, limit: int) -> tuple[list[str], list[str]]:
        """reclaim.lua without worker ids: leases past their deadline, then claiming."""
        reclaimed, dead = [], []
        due = sorted((at, jid) for jid, at in self.m.leases.items() if at <= self.now())[:limit]
        for _at, jid in due:
            job = self.m.jobs[jid]
            self._leave_processing(job)
            (reclaimed if self._give_back(job) == "reclaimed" else dead).append(jid)
        return reclaimed + self._reclaim_claiming(limit), dead

    def _claiming_due(self, limit: int) -> list[str]:
        stuck = self.m.claiming[:limit] if limit else list(self.m.claiming)
        return [
            jid for jid in stuck if jid in self.m.unstamped and self.now() - self.m.unstamped[jid] >= 2 * VISIBILITY
        ]

    def _reclaim_claiming(self, limit: int) -> list[str]:
        """Ids a dead worker's BLMOVE left on claiming: timed from the first sweep
        that saw them, handed back after 2 x visibility. (limit 0 reads them all.)"""
        reclaimed = []
        stuck = self.m.claiming[:limit] if limit else list(self.m.claiming)
        for jid in stuck:
            first = self.m.unstamped.get(jid)
            if first is None:
                self.m.unstamped[jid] = self.now()
            elif self.now() - first >= 2 * VISIBILITY:
                self._lrem(self.m.claiming, jid, 1)
                del self.m.unstamped[jid]
                job = self.m.jobs[jid]
                job.additional_deliveries += 1
                self.m.pending.append(jid)
                self.m.stats["reclaimed"] += 1
                reclaimed.append(jid)
        if not stuck:
            self.m.unstamped.clear()
        return reclaimed

    def _expire(self, limit: int) -> list[str]:
        expired = []
        due = sorted((at, jid) for jid, at in self.m.deadlines.items() if at <= self.now())[:limit]
        for _at, jid in due:
            del self.m.deadlines[jid]
            job = self.m.jobs.get(jid)
            if job is None or job.status not in UNFINISHED:
                continue
            if job.status == "pending":
                if jid in self.m.pending:
                    self._lrem(self.m.pending, jid, 1)
                else:  # left on the claiming list by a worker that died after BLMOVE
                    self._lrem(self.m.claiming, jid, 1)
                    self.m.unstamped.pop(jid, None)
            elif job.status == "scheduled":
                del self.m.scheduled[jid]
            else:
                self._leave_processing(job)
            self._release_unique(job)
            job.status = "expired"
            job.token = ""
            self.m.stats["expired"] += 1
            expired.append(jid)
        return expired

    def _finished_claim(self, job_id: str) -> None:
        job = self.m.jobs[job_id]
        self._leave_processing(job)

    # -------------------------------------------------------------- strategies

    def _pick(self, data, items, label):
        # In the order the machine made them: replays of an example must draw alike.
        return data.draw(st.sampled_from(list(dict.fromkeys(items))), label=label)

    # ------------------------------------------------------------------- rules

    @rule(
        delay=st.sampled_from([0, 0, 0, 1, 1000, 7000]),
        ttl=st.sampled_from([0, 0, 0, 1, 2000, 8000, 60_000]),
        unique=st.sampled_from(["", "", "", "a", "b"]),
        max_attempts=st.integers(1, 3),
    )
    def enqueue(self, delay, ttl, unique, max_attempts):
        now = self.now()
        holder = self.m.unique.get(unique) if unique else None
        self.made += 1
        # Ids as the engine makes them (time first), but with a counter where the
        # randomness goes, so that every replay of an example sees the same ids.
        job_id = self.q.enqueue(
            {"n": self.made},
            job_id=f"{now:012x}{self.made:024x}",
            delay_ms=delay,
            ttl_ms=ttl,
            unique_key=unique,
            max_attempts=max_attempts,
        )
        if holder is not None and self.m.jobs.get(holder) and self.m.jobs[holder].status in UNFINISHED:
            assert job_id == holder
            return
        assert job_id not in self.m.jobs
        job = MJob(job_id, "scheduled" if delay else "pending", max_attempts, now + ttl if ttl else None, unique)
        self.m.jobs[job_id] = job
        if unique:
            self.m.unique[unique] = job_id
        if delay:
            self.m.scheduled[job_id] = now + delay
        else:
            self.m.pending.insert(0, job_id)
        if ttl:
            self.m.deadlines[job_id] = now + ttl
        self.m.stats["enqueued"] += 1

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def claim(self, worker):
        claimed = self.q.claim_nowait(worker)
        self._promote(100)
        expected = None
        for _ in range(100):
            if not self.m.pending:
                break
            jid = self.m.pending.pop()
            self.m.processing.insert(0, jid)
            if self._stamp(jid, worker) is not None:
                expected = self.m.jobs[jid]
                break
        if expected is None:
            assert claimed is None
            return
        assert claimed is not None, f"expected {expected.id} to be claimed"
        assert claimed.id == expected.id
        assert claimed.attempts == expected.attempts
        assert len(claimed.claim_token) == 32 and claimed.claim_token not in {c.claim_token for c in self.stale}
        expected.token = claimed.claim_token
        self.current[claimed.id] = claimed

    @rule()
    def worker_dies_after_blmove(self):
        """BLMOVE moved the next id to claiming; the worker died before its stamp."""
        moved = self.r.lmove(K + "pending", K + "claiming", "RIGHT", "LEFT")
        if not self.m.pending:
            assert moved is None
            return
        jid = self.m.pending.pop()
        assert moved == jid
        self.m.claiming.insert(0, jid)

    @precondition(lambda self: self.m.claiming)
    @rule(data=st.data(), worker=st.sampled_from(["w1", "w2"]))
    def late_stamp(self, data, worker):
        """The stamp of a BLMOVE arrives (possibly after a sweep handed the id back)."""
        jid = self._pick(data, self.m.claiming, "id on claiming")
        res = scripts.get("stamp")(
            self.r, self.q._claim_keys(), [self.now(), new_claim_token(), VISIBILITY, worker, jid, FAILED_TTL]
        )
        self._lrem(self.m.claiming, jid, 1)
        self.m.unstamped.pop(jid, None)
        self.m.processing.insert(0, jid)
        job = self._stamp(jid, worker)
        if job is None:
            assert not res
            return
        assert res
        claimed = ClaimedJob.from_fields(dict(zip(res[::2], res[1::2], strict=True)))
        assert claimed.id == jid and claimed.attempts == job.attempts
        job.token = claimed.claim_token
        self.current[jid] = claimed

    @precondition(lambda self: self.current)
    @rule(data=st.data(), keep=st.sampled_from([True, True, True, False]))
    def complete(self, data, keep):
        jid = self._pick(data, self.current, "running job")
        claim = self.current[jid]
        assert self.q.complete_outcome(claim, {"done": jid}, keep_result=keep) is Outcome.OK
        job = self.m.jobs[jid]
        self._finished_claim(jid)
        self.m.deadlines.pop(jid, None)
        self._release_unique(job)
        self.m.stats["completed"] += 1
        if not keep:  # Disque's fast acknowledgement: the hash goes at once
            del self.m.jobs[jid]
            self.attempts_seen.pop(jid, None)
            return
        job.status = "completed"
        self.m.completed.insert(0, jid)
        del self.m.completed[HISTORY:]

    @precondition(lambda self: self.current)
    @rule(data=st.data(), delay=st.sampled_from([0, 0, 3000]), terminal=st.booleans())
    def fail(self, data, delay, terminal):
        jid = self._pick(data, self.current, "running job")
        claim = self.current[jid]
        outcome = self.q.fail_outcome(claim, "boom", retry_delay_ms=delay, terminal=terminal)
        job = self.m.jobs[jid]
        self._finished_claim(jid)
        if not terminal and job.attempts < job.max_attempts:
            assert outcome is Outcome.RETRYING
            self.m.stats["retried"] += 1
            if delay:
                job.status = "scheduled"
                self.m.scheduled[jid] = self.now() + delay
            else:
                job.status = "pending"
                self.m.pending.insert(0, jid)
        else:
            assert outcome is Outcome.FAILED
            job.status = "failed"
            self.m.deadlines.pop(jid, None)
            self._release_unique(job)
            self.m.failed.insert(0, jid)
            self.m.stats["failed"] += 1

    @precondition(lambda self: self.current)
    @rule(
        data=st.data(),
        delay=st.sampled_from([0, 0, 2000]),
        kind=st.sampled_from(["nack", "requeue", "requeue-front", "defer"]),
    )
    def requeue(self, data, delay, kind):
        jid = self._pick(data, self.current, "running job")
        claim = self.current[jid]
        job = self.m.jobs[jid]
        if kind == "nack":
            outcome = self.q.requeue(claim, count_attempt=False, event="nacked", counter="nacks", error="not now")
            delay, front, event, counted = 0, False, "nacked", False
            job.nacks += 1
        elif kind == "defer":
            outcome = self.q.requeue(claim, delay_ms=delay, count_attempt=False, event="deferred")
            front, event, counted = False, "deferred", False
        else:
            front = kind == "requeue-front"
            outcome = self.q.requeue(claim, delay_ms=delay, front=front)
            event, counted = "requeued", True
        assert outcome is Outcome.OK
        if not counted and job.attempts > 0:
            job.attempts -= 1
            self.gave_back.add(jid)
        self._finished_claim(jid)
        if delay:
            job.status = "scheduled"
            self.m.scheduled[jid] = self.now() + delay
        else:
            job.status = "pending"
            if front:
                self.m.pending.append(jid)
            else:
                self.m.pending.insert(0, jid)
        self.m.stats[event] += 1

    @precondition(lambda self: self.current)
    @rule(data=st.data(), lease=st.sampled_from([None, 1000, 20_000]))
    def touch(self, data, lease):
        jid = self._pick(data, self.current, "running job")
        deadline = self.now() + (VISIBILITY if lease is None else lease)
        job = self.m.jobs[jid]
        if job.expires_at is not None and job.expires_at < deadline:
            deadline = job.expires_at
        assert self.q.touch(self.current[jid], lease) == deadline
        self.m.leases[jid] = deadline

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), op=st.sampled_from(["complete", "fail", "requeue", "nack", "touch", "delete"]))
    def stale_token_changes_nothing(self, data, op):
        claim = data.draw(st.sampled_from(self.stale), label="stale claim")
        before = dump(self.r)
        if op == "complete":
            result = self.q.complete_outcome(claim, "late")
        elif op == "fail":
            result = self.q.fail_outcome(claim, "late")
        elif op == "requeue":
            result = self.q.requeue(claim)
        elif op == "nack":
            result = self.q.requeue(claim, count_attempt=False, event="nacked", counter="nacks")
        elif op == "touch":
            result = self.q.touch(claim)
        else:
            result = self.q.delete(claim.id, claim.claim_token)
        exists = claim.id in self.m.jobs
        if op == "touch":
            assert result is None
        else:
            assert result is (Outcome.NOT_OWNER if exists else Outcome.MISSING)
        assert dump(self.r) == before

    @precondition(lambda self: self.m.jobs)
    @rule(data=st.data())
    def forged_token_changes_nothing(self, data):
        """Empty, made-up and other jobs' tokens, against any job."""
        jid = self._pick(data, self.m.jobs, "job")
        token = data.draw(st.sampled_from(["", "0" * 32, *[c.claim_token for c in self.current.values()]]))
        if self.m.jobs[jid].token == token and token:
            return  # that is the real claim
        forged = ClaimedJob(id=jid, payload=None, attempts=0, claim_token=token)
        before = dump(self.r)
        assert self.q.complete_outcome(forged) is Outcome.NOT_OWNER
        assert self.q.fail_outcome(forged, "x") is Outcome.NOT_OWNER
        assert self.q.touch(forged) is None
        assert dump(self.r) == before

    @rule()
    def sweep(self):
        result = self.q.sweep()
        promoted = self._promote(1000)
        reclaimed, dead = self._reclaim(1000)
        expired = self._expire(1000)
        assert (result.promoted, result.reclaimed, result.dead_lettered, result.expired) == (
            promoted,
            reclaimed,
            dead,
            expired,
        )

    @rule()
    def reclaim_stuck(self):
        reclaimed = self.q.reclaim_stuck()
        expected, _dead = self._reclaim(1000)
        assert reclaimed == expected

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def reclaim_lost_worker(self, worker):
        """A worker's heartbeat lapsed: every job it holds goes back, whatever its lease."""
        from_claiming = self._claiming_due(0)
        reclaimed = self.q.reclaim_worker_jobs([worker])
        mine = sorted(jid for jid in set(self.m.processing) if self.m.jobs[jid].worker == worker)
        # The worker's set is read with SMEMBERS, in an order that is Redis's to
        # choose: take it from the replies (pending's tail, failed's head).
        worker_part = reclaimed[: len(reclaimed) - len(from_claiming)]
        n_dead = len(mine) - len(worker_part)
        dead = list(reversed(self.r.lrange(K + "failed", 0, n_dead - 1))) if n_dead else []
        assert sorted(worker_part + dead) == mine
        for jid in dead + worker_part:
            job = self.m.jobs[jid]
            self._leave_processing(job)
            assert self._give_back(job) == ("dead" if jid in dead else "reclaimed")
        assert self._reclaim_claiming(0) == reclaimed[len(worker_part) :] == from_claiming

    @precondition(lambda self: self.m.jobs)
    @rule(data=st.data())
    def delete_without_token(self, data):
        jid = self._pick(data, self.m.jobs, "job")
        job = self.m.jobs[jid]
        outcome = self.q.delete(jid)
        if job.status == "processing":
            assert outcome is Outcome.NOT_OWNER
            return
        assert outcome is Outcome.OK
        self._forget(job)

    @precondition(lambda self: self.current)
    @rule(data=st.data())
    def delete_with_token(self, data):
        jid = self._pick(data, self.current, "running job")
        assert self.q.delete(jid, self.current[jid].claim_token) is Outcome.OK
        self._finished_claim(jid)
        self._forget(self.m.jobs[jid])

    def _forget(self, job: MJob) -> None:
        jid = job.id
        if job.status == "pending":
            self._lrem(self.m.pending, jid, 1)
            self._lrem(self.m.claiming, jid, 1)
        elif job.status == "scheduled":
            del self.m.scheduled[jid]
        elif job.status == "completed":
            self._lrem(self.m.completed, jid, 1)
        elif job.status == "failed":
            self._lrem(self.m.failed, jid, 1)
        if job.status in TERMINAL:
            self.m.deleted_terminal += 1
        self.m.deadlines.pop(jid, None)
        self._release_unique(job)
        del self.m.jobs[jid]
        self.attempts_seen.pop(jid, None)
        self.m.stats["deleted"] += 1

    @precondition(lambda self: any(j.status in TERMINAL for j in self.m.jobs.values()))
    @rule(data=st.data())
    def replay(self, data):
        jid = self._pick(data, [j.id for j in self.m.jobs.values() if j.status in TERMINAL], "finished job")
        job = self.m.jobs[jid]
        assert self.q.retry(jid) is Outcome.OK
        if job.status == "failed":
            self._lrem(self.m.failed, jid, 1)
        elif job.status == "completed":
            self._lrem(self.m.completed, jid, 1)
        job.expires_at = None
        self.m.deadlines.pop(jid, None)
        job.replays += 1
        job.status = "pending"
        job.attempts = 0
        self.gave_back.add(jid)
        if job.unique and job.unique not in self.m.unique:
            self.m.unique[job.unique] = jid
        self.m.pending.insert(0, jid)
        self.m.stats["replayed"] += 1

    @rule(ms=st.sampled_from([1, 999, 1000, 2500, 5000, 10_001, 60_000]))
    def clock_jumps(self, ms):
        self.clock.ms += ms

    # -------------------------------------------------------------- invariants

    @invariant()
    def invariants_hold(self):
        """Read the keyspace once per step, then check it every way."""
        state = read_state(self.r)
        self.every_job_is_in_exactly_one_place(state)
        self.leases_and_owners_only_for_jobs_in_processing(state)
        self.attempts_only_grow(state)
        self.counters_add_up(state)
        self.terminal_hashes_expire_as_cleanup_says(state)
        self.keyspace_matches_the_model(state)

    def keyspace_matches_the_model(self, state):
        m = self.m
        assert state["pending"] == m.pending
        assert state["claiming"] == m.claiming
        assert sorted(state["processing"]) == sorted(m.processing)
        assert state["completed"] == m.completed
        assert state["failed"] == m.failed
        assert state["scheduled"] == m.scheduled
        assert state["leases"] == m.leases
        assert state["deadlines"] == m.deadlines
        assert state["unique"] == m.unique
        assert state["stats"] == {k: v for k, v in m.stats.items() if v}
        assert set(state["hashes"]) == set(m.jobs)
        for jid, job in m.jobs.items():
            h = state["hashes"][jid]
            assert h["status"] == job.status, jid
            assert int(h["attempts"]) == job.attempts, jid
            assert h.get("claim_token", "") == job.token, jid
            assert int(h.get("nacks", 0)) == job.nacks
            assert int(h.get("additional_deliveries", 0)) == job.additional_deliveries
            assert int(h.get("replays", 0)) == job.replays

    def every_job_is_in_exactly_one_place(self, state):
        """Checked on what Redis holds alone, whatever the model says."""
        places = collections.defaultdict(list)
        for name in ("pending", "claiming", "processing", "completed", "failed"):
            for jid in state[name]:
                places[jid].append(name)
        for jid in state["scheduled"]:
            places[jid].append("scheduled")
        for jid in places:
            assert jid in state["hashes"], f"{jid} on {places[jid]} has no hash"
        for jid, h in state["hashes"].items():
            where = places.get(jid, [])
            status = h["status"]
            if status == "pending":
                assert where in (["pending"], ["claiming"]), (jid, status, where)
            elif status in ("scheduled", "processing", "failed"):
                assert where == [status], (jid, status, where)
            elif status == "completed":
                assert where in ([], ["completed"]), (jid, status, where)  # [] once trimmed by HISTORY
            else:
                assert status == "expired" and where == [], (jid, status, where)

    def leases_and_owners_only_for_jobs_in_processing(self, state):
        running = {jid for jid, h in state["hashes"].items() if h["status"] == "processing"}
        assert set(state["leases"]) == running
        owned = {jid for members in state["owners"].values() for jid in members}
        assert owned == running
        for worker, members in state["owners"].items():
            for jid in members:
                assert state["hashes"][jid]["worker"] == worker
        for jid in running:
            h = state["hashes"][jid]
            assert int(h["lease_until_ms"]) == state["leases"][jid]
            assert len(h["claim_token"]) == 32

    def attempts_only_grow(self, state):
        for jid, h in state["hashes"].items():
            attempts, before = int(h["attempts"]), self.attempts_seen.get(jid, 0)
            if jid in self.gave_back:  # a nack, deferral or hand-back gives back one; a replay starts at 0
                assert attempts in (before - 1, 0), (jid, before, attempts)
            else:
                assert attempts >= before, (jid, before, attempts)
            self.attempts_seen[jid] = attempts
        self.gave_back.clear()

    def counters_add_up(self, state):
        stats = collections.Counter(state["stats"])
        unfinished = sum(1 for j in self.m.jobs.values() if j.status in UNFINISHED)
        assert stats["enqueued"] + stats["replayed"] == (
            unfinished
            + stats["completed"]
            + stats["failed"]
            + stats["expired"]
            + stats["deleted"]
            - self.m.deleted_terminal
        )
        assert stats["orphans"] == 0

    def terminal_hashes_expire_as_cleanup_says(self, state):
        for jid, ttl in state["ttls"].items():
            status = state["hashes"][jid]["status"]
            if status == "completed":
                assert 0 < ttl <= COMPLETED_TTL, (jid, status, ttl)
            elif status in ("failed", "expired"):
                assert 0 < ttl <= FAILED_TTL, (jid, status, ttl)
            else:
                assert ttl == -1, (jid, status, ttl)  # an unfinished job must never vanish


def dump(r: redis.Redis) -> dict:
    """Every key with its type and value (and TTL presence), for before/after comparisons."""
    out = {}
    for key in sorted(r.keys("*")):
        kind = r.type(key)
        if kind == "string":
            value = r.get(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = r.xlen(key)
        else:
            value = kind
        out[key] = (kind, value, r.ttl(key) > 0)
    return out


def read_state(r: redis.Redis) -> dict:
    pipe = r.pipeline(transaction=False)
    for name in ("pending", "claiming", "processing", "completed", "failed"):
        pipe.lrange(K + name, 0, -1)
    for name in ("scheduled", "leases", "deadlines"):
        pipe.zrange(K + name, 0, -1, withscores=True)
    pipe.hgetall(K + "unique")
    pipe.hgetall(K + "stats")
    pending, claiming, processing, completed, failed, scheduled, leases, deadlines, unique, stats = pipe.execute()
    job_keys = r.keys(K + "job:*")
    owner_keys = r.keys(K + "worker-jobs:*")
    pipe = r.pipeline(transaction=False)
    for key in job_keys:
        pipe.hgetall(key)
        pipe.ttl(key)
    for key in owner_keys:
        pipe.smembers(key)
    replies = pipe.execute()
    hashes, ttls = {}, {}
    for i, key in enumerate(job_keys):
        jid = key[len(K + "job:") :]
        hashes[jid] = replies[2 * i]
        ttls[jid] = replies[2 * i + 1]
    owners = {key[len(K + "worker-jobs:") :]: replies[2 * len(job_keys) + i] for i, key in enumerate(owner_keys)}
    return {
        "pending": pending,
        "claiming": claiming,
        "processing": processing,
        "completed": completed,
        "failed": failed,
        "scheduled": {k: int(v) for k, v in scheduled},
        "leases": {k: int(v) for k, v in leases},
        "deadlines": {k: int(v) for k, v in deadlines},
        "unique": unique,
        "stats": {k: int(v) for k, v in stats.items()},
        "hashes": hashes,
        "ttls": ttls,
        "owners": {w: members for w, members in owners.items() if members},
    }


@pytest.fixture
def machine_client(redis_server):
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    EngineMachine.client = client
    yield client
    client.close()


def test_engine_against_the_model(machine_client):
    run_state_machine_as_test(
        EngineMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_engine_against_the_model_at_length(machine_client):
    run_state_machine_as_test(
        EngineMachine,
        settings=settings(
            max_examples=1000,
            stateful_step_count=100,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# ------------------------------------------- what the machine found, as examples


@pytest.fixture
def clock():
    return Clock()


def test_a_job_past_its_ttl_found_by_a_claim_gets_the_cleanup_ttl(r, clock):
    """Found by the machine: enqueue(ttl=1), clock +1 ms, claim. The claim drops
    the job as expired, as the sweep would, and must give its hash the same
    CLEANUP TTL the sweep gives; it kept it forever."""
    q = RedisJobQueue(r, "jobs", failed_ttl_s=FAILED_TTL, clock=clock)
    job_id = q.enqueue({}, ttl_ms=1)
    clock.advance(0.001)
    assert q.claim(0) is None
    assert r.hget(K + f"job:{job_id}", "status") == "expired"
    assert 0 < r.ttl(K + f"job:{job_id}") <= FAILED_TTL


def test_a_job_that_expires_on_the_claiming_list_is_taken_off_it(r, clock):
    """Found by the machine: a worker BLMOVEs a job and dies before its stamp; the
    job's TTL passes. The sweep marked it expired but left its id on the claiming
    list, and 2 x visibility later "reclaimed" it: a reclaimed event and counter,
    an additional delivery and a stale pending entry for a job that had expired."""
    q = RedisJobQueue(r, "jobs", visibility_ms=VISIBILITY, clock=clock)
    job_id = q.enqueue({}, ttl_ms=1000)
    assert r.lmove(K + "pending", K + "claiming", "RIGHT", "LEFT") == job_id  # ... and the worker dies
    clock.advance(1)
    assert q.sweep().expired == [job_id]
    assert r.llen(K + "claiming") == 0 and r.hlen(K + "unstamped") == 0
    clock.advance(60)
    assert q.sweep().reclaimed == []
    assert r.llen(K + "pending") == 0 and r.hget(K + "stats", "reclaimed") is None
    assert r.hget(K + f"job:{job_id}", "additional_deliveries") is None
