"""How a worker's runner threads get jobs and report completions, in few round trips.

Leader and followers: a runner that needs a job and finds none ready becomes
the leader. It claims, in one script call, as many jobs as there are idle
runners (itself included) plus the prefetch, keeps the first and leaves the
rest ready. While it is at it, the same pipeline carries the completions other
runners have left for it.

Runners that have just finished a job take the next ready one at once. Idle
runners stay asleep unless work waits: one of them keeps watch and joins in
when a ready job has waited HELP_AFTER_S (and the last runner to join did so
at least that long ago), or no fetch has happened for that long, then hands
the watch to another. Short jobs thus run back to back on one or two threads
(each extra busy thread costs GIL hand-offs and system calls), and slow jobs
still spread over every runner, one more every few milliseconds.

While the jobs are short (SHORT_JOB_S on average, lately), a fetch claims up
to MAX_BATCH jobs: a claim's and a completion's fixed cost in Redis is then
shared by more jobs, and the jobs held here are done within milliseconds.

Completions of jobs whose handler simply returned are sent that way, batched
with the next claim, instead of one round trip each. A completion waits at
most until the next fetch; one left while the leader waits in BLMOVE on an
idle queue is sent by its runner at once (and the leader sends those left
during its pipeline before it starts waiting). Until a
completion is acknowledged the job stays tracked as running, so its lease is
renewed and a shutdown sends it before handing anything back.

A claim whose reply never came (the connection failed after it was sent) may
still have claimed jobs: the next fetch first hands those back (found by the
claim's token in the worker's set of jobs), without using an attempt, instead
of leaving them until their leases run out.

A claimed job that waited here through a Redis error is checked before it
starts: after a failover the new primary may never have seen its claim (the
reply came from the old one before the claim reached a replica) and may hand
the job out again. Such a job is dropped here, not run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..engine import scripts
from ..engine.ids import new_claim_token
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob, Outcome, limited_wait_ms

logger = logging.getLogger("django_jobqueue.worker")

# Most jobs one claim takes: bounds one script's run time inside Redis.
MAX_BATCH = 32
# How long an idle runner sleeps before looking again (and at shutdown).
FOLLOW_WAIT_S = 0.5
# An idle runner joins in when a ready job, or the next fetch, has waited this
# long; runners join one at a time, at most one per this interval.
HELP_AFTER_S = 0.002
# Jobs shorter than this on average are short: a fetch may claim MAX_BATCH.
SHORT_JOB_S = 0.001
# A job claimed ahead whose TTL ends within this margin of now (as the claim's
# server time and the wait here tell) is started only after Redis checks it.
DEADLINE_MARGIN_MS = 100
# A completion waits at most about this long for a fetch to carry it.
ACK_DELAY_S = 0.02
# A fetch that finds its only queue limited (flow limits) waits for room up to
# block_ms; with several queues, no longer than this, so that the others are
# looked at again soon.
LIMITED_WAIT_MS = 250
# Errors after which a call sent may have run without its reply coming back.
_REPLY_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class Ack:
    """A completion left to be sent with the next fetch, or (``start``) the
    start of a job claimed ahead, which rides the same way."""

    queue: RedisJobQueue
    claimed: ClaimedJob
    result_json: str
    keep_result: bool
    start: bool = False


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
        short_batch: int = 0,
        on_claimed: Callable[[RedisJobQueue, list[ClaimedJob]], None],
        on_acked: Callable[[list[tuple[Ack, Outcome]]], None],
        on_lost: Callable[[RedisJobQueue, ClaimedJob, Outcome], None] = lambda q, c, o: None,
        limit: int | None = None,
    ) -> None:
        self.queues = list(queues)
        self.worker_id = worker_id
        # Block in BLMOVE when nothing is ready (one queue, not a burst).
        self.block = block
        self.block_ms = block_ms
        # Jobs a fetch may claim beyond the runners waiting for one: fewer round
        # trips, at the price of jobs waiting here behind busy runners.
        self.prefetch = prefetch
        # How many jobs a fetch may claim in all while the jobs are short
        # (0: never more than the prefetch allows).
        self.short_batch = min(short_batch, MAX_BATCH)
        self._job_s: float | None = None  # a moving average of the jobs' run times
        self._on_claimed = on_claimed
        self._on_acked = on_acked
        self._on_lost = on_lost
        # The most jobs to hand to runners in all (a --max-jobs worker), so
        # that no claim takes jobs only to hand them back; None: no limit.
        self.limit = limit
        self._handed_out = 0
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # Jobs claimed for runners not yet free: (queue, job, when its claim
        # was sent: what its TTL check and a Redis error since are timed from).
        self._ready: deque[tuple[RedisJobQueue, ClaimedJob, float]] = deque()
        # When the jobs waiting there were made ready (a fetch adds jobs only
        # when none wait): what idle runners time their joining in from.
        self._made_ready = 0.0
        self._standby = threading.Condition(lock)  # wakes the watching runner
        # Wakes a flush waiting for the completions on their way (not _cond:
        # that would wake every idle runner at each send).
        self._all_settled = threading.Condition(lock)
        self._acks: list[Ack] = []
        self._acks_since = 0.0  # when the oldest waiting completion was left
        self._acks_in_flight = 0  # batches of them taken out and not yet settled
        self._fetching = False
        self._blocking = False  # the fetch in progress waits (BLMOVE, or for room): runners send their own completions
        self._waiting = 0  # idle runners
        self._watching = False  # one idle runner waits on _standby, the rest on _cond
        self._last_take = 0.0  # when a runner last took a job
        self._last_join = 0.0  # when an idle runner last joined in
        self._last_empty = -1.0  # when a fetch last found the queues empty
        self._empty_began = -1.0  # when that fetch began
        self._failed_at = -1.0  # when a Redis call last failed (see redis_failed)
        # Claims sent whose reply never came: (queue, claim token), handed
        # back by the next fetch (touched only by the fetching runner).
        self._unanswered: list[tuple[RedisJobQueue, str]] = []
        # The first queue whose claim said its flow limits let no job out,
        # with the wait it named, during the fetch in progress; and whether
        # the last fetch came back empty-handed for that reason, after
        # waiting for room (touched only by the fetching runner).
        self._limited: tuple[RedisJobQueue, int] | None = None
        self._room_awaited = False

    # ------------------------------------------------------------ completions

    def job_ran(self, seconds: float) -> None:
        """A runner finished a job that took this long (for the claim size)."""
        # Unlocked: a float assignment is atomic; an update lost to a race
        # only makes the average a little older.
        avg = self._job_s
        self._job_s = seconds if avg is None else avg + (seconds - avg) / 8

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

    def flush(self, wait_s: float = 0.0) -> None:
        """Send every completion left so far, now. ``wait_s``: first wait up to
        that long for completions another thread is sending (at shutdown: a
        job whose completion is still on its way must not be handed back, or
        it runs again while its completion is refused)."""
        with self._cond:
            deadline = time.monotonic() + wait_s
            while self._acks_in_flight and (left := deadline - time.monotonic()) > 0:
                self._all_settled.wait(left)
            acks = self._take_acks()
        self._send(acks, None)

    def _take_acks(self) -> list[Ack]:
        """(Holding the lock.) The completions left, now on their way: each
        batch taken is settled by _send (see flush)."""
        acks, self._acks = self._acks, []
        if acks:
            self._acks_in_flight += 1
        return acks

    def _settled(self, acks: list[Ack]) -> None:
        """A batch taken by _take_acks was sent, or put back to wait."""
        if acks:
            with self._cond:
                self._acks_in_flight -= 1
                if not self._acks_in_flight:
                    self._all_settled.notify_all()

    def _send(self, acks: list[Ack], claim: RedisJobQueue | None, want: int = 0, start: int = 1) -> list[ClaimedJob]:
        """One pipeline: the starts and completions, then (optionally) a claim
        of ``want`` jobs, the first ``start`` of which start at once."""
        try:
            return self._send_pipeline(acks, claim, want, start)
        finally:
            self._settled(acks)

    def _send_pipeline(self, acks: list[Ack], claim: RedisJobQueue | None, want: int, start: int) -> list[ClaimedJob]:
        # One script call per queue completes all of that queue's jobs and
        # records the starts of its jobs claimed ahead, except of those that
        # complete in it (their completion counts the attempt: complete.lua).
        completing = {a.claimed.id for a in acks if not a.start}
        by_queue: dict[int, tuple[RedisJobQueue, list[Ack], list[Ack]]] = {}
        for a in acks:
            if a.start and a.claimed.id in completing:
                continue
            group = by_queue.get(id(a.queue))
            if group is None:
                group = by_queue[id(a.queue)] = (a.queue, [], [])
            (group[2] if a.start else group[1]).append(a)
        groups = list(by_queue.values())
        calls = [
            q.complete_batch_call(
                [(a.claimed, a.result_json, a.keep_result) for a in done], [a.claimed for a in starts]
            )
            for q, done, starts in groups
        ]
        token = ""
        if claim is not None:
            token = new_claim_token()
            # Jobs claimed ahead of busy runners hold slots of a limited
            # queue: worth it only while the jobs are short (claim.lua).
            short = self._job_s is not None and self._job_s < SHORT_JOB_S
            calls.append(
                claim.claim_many_call(
                    want, self.worker_id, start=start, defer_last_chance=True, token=token, claim_ahead=short
                )
            )
        if not calls:
            return []
        try:
            client = claim.client if claim is not None else acks[0].queue.client
            replies = scripts.run_pipeline(client, calls, retry=False, raise_on_error=False)
        except Exception as exc:
            # Not sent (or not known to be): keep them for the next try; a
            # completion sent twice is refused by its token the second time.
            replies = [exc] * len(calls)
        # Each call by its own reply: a completion refused (a key of the wrong
        # type, a cluster node down) never discards a claim that succeeded in
        # the same pipeline, nor the other queues' completions.
        failure: Exception | None = None
        settled: list[tuple[Ack, Outcome]] = []
        for (_queue, done, starts), reply in zip(groups, replies, strict=False):
            if isinstance(reply, Exception):
                failure = failure or reply
                with self._cond:
                    self._acks[:0] = done + starts
                if not isinstance(reply, _REPLY_LOST):
                    logger.error("completing %d job(s) failed (tried again later): %s", len(done), reply)
                continue
            outcomes = RedisJobQueue.outcomes(reply)
            settled += zip(done, outcomes, strict=False)
            # A start refused: the job runs already; its completion (refused
            # too) or the lease renewal says what became of the claim.
        if settled:
            # One call for the whole batch: the worker takes its lock once.
            self._on_acked(settled)
        if failure is not None and isinstance(failure, _REPLY_LOST):
            self.redis_failed()
        if claim is None:
            if isinstance(failure, _REPLY_LOST):
                raise failure  # Redis is away: the caller backs off
            return []
        reply = replies[-1]
        wait = limited_wait_ms(reply)
        if wait is not None and self._limited is None:
            self._limited = (claim, wait)
        if isinstance(reply, Exception):
            if isinstance(reply, _REPLY_LOST):
                self.redis_failed()
                # Redis may have run the claim: its jobs are handed back
                # before the next one (see _hand_back_unanswered).
                self._unanswered.append((claim, token))
            raise reply
        return RedisJobQueue.parse_claim_many(reply)

    @property
    def spent(self) -> bool:
        """Whether every job of the limit was handed to a runner (a worker with
        max_jobs: its runners stop; counted under the lock, so two runners
        never both take the last one)."""
        return self.limit is not None and self._handed_out >= self.limit

    def redis_failed(self) -> None:
        """A Redis call failed: jobs made ready before now are checked before
        they start (their claims may have died with a failed primary)."""
        self._failed_at = time.monotonic()

    # ----------------------------------------------------------------- claims

    def next_job(
        self, eager: bool = True, idle_since: float = float("inf")
    ) -> tuple[tuple[RedisJobQueue, ClaimedJob] | None, bool]:
        """(a job for the calling runner, or None; whether the queues were
        found empty). None with False: waited; the caller loops, checking for
        shutdown, and calls again with ``eager=False``.

        ``eager``: the runner has just finished a job (or just found the queues
        empty as the leader), so it takes the next ready job, or fetches, at
        once. An idle runner (``eager=False``) joins in only when work has waited
        HELP_AFTER_S: a ready job nobody took, or no fetch while the busy runners
        are all held up. So short jobs run back to back on one or two threads
        (every extra thread costs GIL hand-offs and system calls), while slow
        ones spread over every runner within a few milliseconds each.
        ``idle_since``: when the runner finished its last job. A fetch that
        found the queues empty speaks for it only if it began after that: a
        job the runner requeued meanwhile must not be missed (and end a burst).
        """
        with self._cond:
            if self.spent:
                return None, True
            now = time.monotonic()
            take = bool(self._ready) and (eager or now - self._join_clock() >= HELP_AFTER_S)
            if take:
                queue, claimed, ready_at = self._ready.popleft()
                self._handed_out += 1
                suspect = ready_at <= self._failed_at
                # Most jobs claimed ahead: the start rides on the next
                # pipeline (recorded here, under the lock already held).
                started = claimed.started
                check = not started and self._must_check(claimed, ready_at, suspect)
                riding = not started and not check and not claimed.last_chance
                if riding:
                    if not self._acks:
                        self._acks_since = now
                    self._acks.append(Ack(queue, claimed, "", False, start=True))
                    claimed.attempts += 1
                self._last_take = now
                if not eager:
                    self._last_join = now
                    self._cond.notify()  # someone else keeps watch now
                stale: list[Ack] = []
                if self._acks and now - self._acks_since > ACK_DELAY_S:
                    stale = self._take_acks()
            elif (
                not self._ready
                and not self._fetching
                and (eager or self._stalled(now) or self._empty_is_stale(idle_since) or self._room_awaited)
            ):
                self._fetching = True
                want = min(MAX_BATCH, self._waiting + 1 + self.prefetch)
                if self._job_s is not None and self._job_s < SHORT_JOB_S:
                    want = max(want, self.short_batch)
                if self.limit is not None:
                    want = min(want, self.limit - self._handed_out)
                acks = self._take_acks()
            elif not eager and not self._ready and not self._fetching and self._last_empty > self._last_take:
                # The last fetch, begun after this runner's last job ended, found
                # the queues empty: say so (a burst ends; with several queues the
                # runner polls again after a pause).
                return None, True
            else:
                own: list[Ack] = []
                if self._blocking:
                    # The fetch in progress waits in BLMOVE: it would carry
                    # this runner's completions only after a job arrives.
                    own = self._take_acks()
                return self._wait(own, now)
        if take:
            if stale:
                try:
                    self._send(stale, None)
                except Exception:
                    # The job is ours (tracked, its lease renewed): keep it for
                    # the next runner, or it would be held here forever.
                    if riding:
                        claimed.attempts -= 1  # counted again when a runner takes it
                    with self._cond:
                        self._ready.appendleft((queue, claimed, ready_at))
                        self._made_ready = now
                        self._handed_out -= 1
                    raise
            if not started and not riding and not self._start(queue, claimed, ready_at, check):
                return None, False
            return (queue, claimed), False
        got: list[tuple[RedisJobQueue, ClaimedJob, float]] = []
        began = time.monotonic()
        try:
            got = self._fetch(want, acks)
        finally:
            with self._cond:
                self._fetching = False
                now = time.monotonic()
                if got:
                    self._last_take = now
                    self._handed_out += 1
                elif not self._room_awaited:
                    self._last_empty, self._empty_began = now, began
                    self._cond.notify_all()  # idle runners learn it (a burst ends)
                self._ready.extend(got[1:])  # each timed from when its claim was sent
                self._made_ready = now
                self._standby.notify()  # restart the watch on the new state
        if not got:
            # Limited, not empty: a burst goes on; the runner fetches again at
            # once (it has waited for room already).
            return None, not self._room_awaited
        queue, claimed, _sent_at = got[0]
        if not claimed.started:
            claimed.needs_start = True  # its only chance: the claim left it to the worker (_stamp.lua)
        return (queue, claimed), False

    def _must_check(self, claimed: ClaimedJob, ready_at: float, suspect: bool) -> bool:
        """Whether Redis must check a job claimed ahead before a runner runs it
        (start.lua, one round trip): it waited through a Redis error (its claim
        may have died with a failed primary), its TTL may have passed while it
        waited (it must not run), or it was handed out before (a job that kills
        its worker while its start rides would otherwise never count an
        attempt). Otherwise its start rides on the next pipeline, unless the
        run is its only chance (at-most-once, or its last attempt): that one is
        started right before its handler is called (``needs_start``), so that a
        kill before then never uses it up."""
        return bool(suspect or claimed.fields.get("additional_deliveries") or self._deadline_near(claimed, ready_at))

    def _start(self, queue: RedisJobQueue, claimed: ClaimedJob, ready_at: float, check: bool) -> bool:
        """A runner takes a job claimed ahead whose start may not ride (see
        _must_check). False: not ours to run."""
        if not check:
            claimed.needs_start = True  # its only chance: started as its handler is called
            return True
        try:
            (outcome,) = queue.start([claimed])
        except Exception:
            with self._cond:
                self._ready.appendleft((queue, claimed, ready_at))  # still to be started
                self._handed_out -= 1
            raise
        if outcome is not Outcome.OK:
            with self._cond:
                self._handed_out -= 1  # not run: another may be, within the limit
            self._on_lost(queue, claimed, outcome)
            return False
        claimed.attempts += 1
        return True

    @staticmethod
    def _deadline_near(claimed: ClaimedJob, ready_at: float) -> bool:
        """Whether the job's TTL may have passed: the server's clock at the
        claim plus the time it waited here, against its deadline (with a
        margin for the claim's reply time)."""
        expires = claimed.fields.get("expires_at_ms")
        if not expires:
            return False
        try:
            claimed_at = int(claimed.fields.get("claimed_at_ms", "0"))
            deadline = int(expires)
        except ValueError:
            return True
        waited_ms = (time.monotonic() - ready_at) * 1000
        return claimed_at + waited_ms + DEADLINE_MARGIN_MS >= deadline

    def _join_clock(self) -> float:
        """Since when the oldest ready job has waited for an idle runner: since
        it was made ready, or since the last runner joined in. (Without the
        latter every idle runner would join at once behind the first: the jobs
        of a long batch of short ones all look HELP_AFTER_S old.)"""
        return max(self._made_ready, self._last_join)

    def _stalled(self, now: float) -> bool:
        """No job taken for HELP_AFTER_S although the last fetch found some: the
        busy runners are all held up, so an idle one should fetch. (After a
        fetch that found the queues empty, its runner alone goes on looking.)"""
        return self._last_take > self._last_empty and now - self._last_take >= HELP_AFTER_S

    def _empty_is_stale(self, idle_since: float) -> bool:
        """The last fetch found the queues empty, but began before the runner's
        last job ended (which may have requeued a job): it must look again."""
        return self._last_empty > self._last_take and self._empty_began < idle_since

    def _wait(self, own: list[Ack], now: float) -> tuple[None, bool]:
        """Wait as an idle runner (called holding the lock; returns None)."""
        if own:
            self._cond.release()
            try:
                self._send(own, None)
            finally:
                self._cond.acquire()
        self._waiting += 1
        try:
            if self._watching:
                self._cond.wait(FOLLOW_WAIT_S)
                return None, False
            # The one watching runner: wakes when the oldest ready job, or the
            # last take, is HELP_AFTER_S old; a fetch in progress wakes it.
            self._watching = True
            if self._ready:
                timeout = HELP_AFTER_S - (now - self._join_clock())
            elif self._fetching or self._last_empty > self._last_take:
                timeout = FOLLOW_WAIT_S
            else:
                timeout = HELP_AFTER_S - (now - self._last_take)
            self._standby.wait(min(FOLLOW_WAIT_S, max(timeout, 0.0001)))
        finally:
            self._waiting -= 1
        self._watching = False
        return None, False

    def _hand_back_unanswered(self) -> None:
        """Hand back the jobs of claims whose reply never came (an error here
        is raised: the fetch is tried again later, these first)."""
        by_queue: dict[int, tuple[RedisJobQueue, list[str]]] = {}
        for queue, token in self._unanswered:
            by_queue.setdefault(id(queue), (queue, []))[1].append(token)
        for key, (queue, tokens) in by_queue.items():
            try:
                ids = queue.release_unanswered_claims(self.worker_id, tokens)
            except _REPLY_LOST:
                raise  # Redis is away: tried again with the next fetch
            except Exception:  # noqa: BLE001 - e.g. a key of the wrong type: never stop claiming for it
                logger.exception("handing back the jobs of a claim whose reply was lost failed; leases bring them back")
                ids = []
            self._unanswered = [(q, t) for q, t in self._unanswered if id(q) != key]
            if ids:
                logger.warning(
                    "a claim's reply was lost: %d job(s) of %s handed back: %s",
                    len(ids),
                    queue.queue_name,
                    ", ".join(ids),
                )

    def _fetch(self, want: int, acks: list[Ack]) -> list[tuple[RedisJobQueue, ClaimedJob, float]]:
        """Claim up to ``want`` jobs: (queue, job, when its claim was sent) each."""
        got: list[tuple[RedisJobQueue, ClaimedJob, float]] = []
        failure: Exception | None = None
        self._limited, self._room_awaited = None, False
        if self._unanswered:
            try:
                self._hand_back_unanswered()
            except Exception:
                with self._cond:
                    self._acks[:0] = acks
                self._settled(acks)
                raise
        for i, queue in enumerate(self.queues):  # strict priority: the first queue first
            need = want - len(got)
            # The claim runs after this moment: a job's wait here (its TTL
            # check, whether a Redis error came after it) is measured from it.
            sent_at = time.monotonic()
            try:
                # The completions ride with the first queue's claim.
                # Only the first job of the whole fetch starts at once (this
                # runner runs it); the others wait here for runners.
                jobs = self._send(acks if i == 0 else [], queue, need, start=0 if got else 1)
            except Exception as exc:
                # One queue's Redis (a cluster node) failing must not stop the
                # others; jobs claimed already (tracked, their leases renewed)
                # must still run. The error is raised if nothing was claimed.
                failure = failure or exc
                continue
            got += self._track(queue, jobs, sent_at)
            if len(got) >= want:
                return got
        if failure is not None:
            if got:
                return got
            raise failure
        limited = self._limited_claim()
        if not got and limited is not None:
            # Jobs wait, but the limits let none out: wait for room (one
            # blocking call, see RedisJobQueue.wait_for_room), not in BLMOVE.
            # Meanwhile runners send their completions themselves, at once, as
            # while blocking in BLMOVE: one of them may free the slot awaited.
            queue, wait = limited
            with self._cond:
                self._blocking = True
                late = self._take_acks()
            try:
                if late:
                    self._send(late, None)
                queue.wait_for_room(wait, self.block_ms if self.block else LIMITED_WAIT_MS)
            finally:
                with self._cond:
                    self._blocking = False
            self._room_awaited = True
            return got
        if not got and self.block:
            with self._cond:
                self._blocking = True
                late = self._take_acks()  # left while the pipeline ran
            try:
                if late:
                    self._send(late, None)
                token = new_claim_token()
                sent_at = time.monotonic()
                try:
                    claimed = self.queues[0].claim(self.block_ms, self.worker_id, token=token, defer_last_chance=True)
                except _REPLY_LOST:
                    self._unanswered.append((self.queues[0], token))
                    raise
            finally:
                with self._cond:
                    self._blocking = False
            if claimed is not None:
                got += self._track(self.queues[0], [claimed], sent_at)
        return got

    def _limited_claim(self) -> tuple[RedisJobQueue, int] | None:
        """The first queue of the fetch in progress whose claim was limited,
        with the wait it named (set by _send_pipeline)."""
        return self._limited

    def _track(
        self, queue: RedisJobQueue, jobs: list[ClaimedJob], sent_at: float
    ) -> list[tuple[RedisJobQueue, ClaimedJob, float]]:
        if jobs:
            self._on_claimed(queue, jobs)
        return [(queue, claimed, sent_at) for claimed in jobs]

    def discard(self, claimed: ClaimedJob) -> bool:
        """Forget a job claimed ahead whose claim is no longer ours (its lease
        renewal was refused: a worker frozen past its lease or its heartbeat,
        whose jobs went back): no runner may run it. False: not waiting here."""
        with self._cond:
            for i, (_q, c, _t) in enumerate(self._ready):
                if c is claimed:
                    del self._ready[i]
                    return True
        return False

    def take_unstarted(self) -> list[tuple[RedisJobQueue, ClaimedJob]]:
        """Claimed jobs no runner has taken yet (at shutdown: to hand back)."""
        with self._cond:
            left = [(q, c) for q, c, _t in self._ready]
            self._ready.clear()
            return left

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()
            self._standby.notify_all()
