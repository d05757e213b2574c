"""How a worker's runner threads get jobs and report completions, in few round trips.

Leader and followers: a runner that needs a job and finds none ready becomes
the leader. It claims, in one script call, as many jobs as there are runners
waiting (itself included), so no job waits in this process behind a busy
runner, and hands the extra ones to the waiting followers. While it is at it,
the same pipeline carries the completions other runners have left for it.

Completions of jobs whose handler simply returned are sent that way, batched
with the next claim, instead of one round trip each. A completion waits at
most until the next fetch; a runner that has left one and finds another runner
fetching (perhaps blocked in BLMOVE on an idle queue) sends it itself. Until a
completion is acknowledged the job stays tracked as running, so its lease is
renewed and a shutdown sends it before handing anything back.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import scripts
from .queue import ClaimedJob, Outcome, RedisJobQueue

# Most jobs one claim takes: bounds one script's run time inside Redis.
MAX_BATCH = 32
# How long a follower waits for the leader before looking again (and at shutdown).
FOLLOW_WAIT_S = 0.5
# A completion waits at most about this long for a fetch to carry it.
ACK_DELAY_S = 0.02


@dataclass
class Ack:
    """A completion left to be sent with the next fetch."""

    queue: RedisJobQueue
    claimed: ClaimedJob
    result_json: str
    keep_result: bool


class Fetcher:
    """Claims for a pool of runner threads; batches their completions."""

    def __init__(
        self,
        queues: Sequence[RedisJobQueue],
        worker_id: str,
        *,
        block: bool,
        block_ms: int,
        prefetch: int = 0,
        on_claimed: Callable[[RedisJobQueue, ClaimedJob], None],
        on_acked: Callable[[Ack, Outcome], None],
    ) -> None:
        self.queues = list(queues)
        self.worker_id = worker_id
        # Block in BLMOVE when nothing is ready (one queue, not a burst).
        self.block = block
        self.block_ms = block_ms
        # Jobs a fetch may claim beyond the runners waiting for one: fewer round
        # trips, at the price of jobs waiting here behind busy runners.
        self.prefetch = prefetch
        self._on_claimed = on_claimed
        self._on_acked = on_acked
        self._cond = threading.Condition()
        self._ready: deque[tuple[RedisJobQueue, ClaimedJob]] = deque()
        self._acks: list[Ack] = []
        self._acks_since = 0.0  # when the oldest waiting completion was left
        self._fetching = False
        self._waiting = 0

    # ------------------------------------------------------------ completions

    def ack(self, ack: Ack) -> None:
        """Leave a completion to be sent with the next fetch."""
        with self._cond:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(ack)

    def flush_stale(self) -> None:
        """Send the completions left if they have waited too long (a backstop
        the worker's maintenance thread calls)."""
        with self._cond:
            if not self._acks or time.monotonic() - self._acks_since <= ACK_DELAY_S:
                return
        self.flush()

    def flush(self) -> None:
        """Send every completion left so far, now."""
        with self._cond:
            acks, self._acks = self._acks, []
        self._send(acks, None)

    def _send(self, acks: list[Ack], claim: RedisJobQueue | None, want: int = 0) -> list[ClaimedJob]:
        """One pipeline: the completions, then (optionally) a claim of ``want`` jobs."""
        calls = [a.queue.complete_call(a.claimed, None, a.keep_result, result_json=a.result_json) for a in acks]
        if claim is not None:
            calls.append(claim.claim_many_call(want, self.worker_id))
        if not calls:
            return []
        try:
            replies = scripts.run_pipeline(claim.client if claim is not None else acks[0].queue.client, calls)
        except Exception:
            # Not sent (or not known to be): keep them for the next try; a
            # completion sent twice is refused by its token the second time.
            with self._cond:
                self._acks[:0] = acks
            raise
        for ack, code in zip(acks, replies, strict=False):
            self._on_acked(ack, {1: Outcome.OK, 0: Outcome.MISSING}.get(int(code), Outcome.NOT_OWNER))
        return RedisJobQueue.parse_claim_many(replies[-1]) if claim is not None else []

    # ----------------------------------------------------------------- claims

    def next_job(self) -> tuple[tuple[RedisJobQueue, ClaimedJob] | None, bool]:
        """(a job for the calling runner, or None; whether the queues were
        found empty). None with False: waited for another runner's fetch; the
        caller loops, checking for shutdown."""
        with self._cond:
            if self._ready:
                item = self._ready.popleft()
                stale: list[Ack] = []
                if self._acks and time.monotonic() - self._acks_since > ACK_DELAY_S:
                    stale, self._acks = self._acks, []
            else:
                item = None
        if item is not None:
            if stale:
                try:
                    self._send(stale, None)
                except Exception:
                    # The job is ours (tracked, its lease renewed): keep it for
                    # the next runner, or it would be held here forever.
                    with self._cond:
                        self._ready.appendleft(item)
                    raise
            return item, False
        with self._cond:
            if self._ready:
                return self._ready.popleft(), False
            if self._fetching:
                own, self._acks = self._acks, []
                leader_busy = True
            else:
                self._fetching = True
                leader_busy = False
                want = min(MAX_BATCH, self._waiting + 1 + max(0, self.prefetch - len(self._ready)))
                acks, self._acks = self._acks, []
        if leader_busy:
            if own:
                self._send(own, None)
            with self._cond:
                self._waiting += 1
                try:
                    if not self._ready:
                        self._cond.wait(FOLLOW_WAIT_S)
                finally:
                    self._waiting -= 1
                return (self._ready.popleft() if self._ready else None), False
        got: list[tuple[RedisJobQueue, ClaimedJob]] = []
        try:
            got = self._fetch(want, acks)
        finally:
            with self._cond:
                self._fetching = False
                self._ready.extend(got[1:])
                self._cond.notify_all()
        return (got[0], False) if got else (None, True)

    def _fetch(self, want: int, acks: list[Ack]) -> list[tuple[RedisJobQueue, ClaimedJob]]:
        got: list[tuple[RedisJobQueue, ClaimedJob]] = []
        failure: Exception | None = None
        for i, queue in enumerate(self.queues):  # strict priority: the first queue first
            need = want - len(got)
            try:
                jobs = self._send(acks, queue, need) if i == 0 else queue.claim_many(need, self.worker_id)
            except Exception as exc:
                # One queue's Redis (a cluster node) failing must not stop the
                # others; jobs claimed already (tracked, their leases renewed)
                # must still run. The error is raised if nothing was claimed.
                failure = failure or exc
                continue
            got += self._track(queue, jobs)
            if len(got) >= want:
                return got
        if failure is not None:
            if got:
                return got
            raise failure
        if not got and self.block:
            claimed = self.queues[0].claim(self.block_ms, self.worker_id)
            if claimed is not None:
                got += self._track(self.queues[0], [claimed])
        return got

    def _track(self, queue: RedisJobQueue, jobs: list[ClaimedJob]) -> list[tuple[RedisJobQueue, ClaimedJob]]:
        for claimed in jobs:
            self._on_claimed(queue, claimed)
        return [(queue, claimed) for claimed in jobs]

    def take_unstarted(self) -> list[tuple[RedisJobQueue, ClaimedJob]]:
        """Claimed jobs no runner has taken yet (at shutdown: to hand back)."""
        with self._cond:
            left = list(self._ready)
            self._ready.clear()
            return left

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()
