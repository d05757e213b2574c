"""RunningJobs: the jobs a worker holds now, shared by its threads.

A job is "running" from its claim (perhaps claimed ahead, for a runner not yet
free) until its completion reached Redis or it was handed back: all that time
its lease is renewed and it is listed in the worker's record. The runners, the
fetcher's callbacks, the lease renewal, the heartbeat and the shutdown each
use the small methods below; none of them sees the dict or its lock.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.queue import RedisJobQueue
    from ..engine.replies import ClaimedJob
    from .job import Job


@dataclass(slots=True)
class Running:
    queue: RedisJobQueue
    claimed: ClaimedJob
    started: float = field(default_factory=time.monotonic)
    job: Job | None = None
    finished: bool = False  # the handler returned; the completion is sent with the next claim
    cancel_requested: bool = False  # its cancellation was heard (cancels.py): it must not start


class RunningJobs:
    """The claimed jobs not yet finished, and which runner threads hold one."""

    def __init__(self) -> None:
        self._jobs: dict[str, Running] = {}
        self._acking: set[str] = set()  # ids whose completion waits to be sent with the next claim
        self._busy: set[int | None] = set()  # idents of runner threads holding a job
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def track(self, queue: RedisJobQueue, jobs: list[ClaimedJob]) -> None:
        """Claimed (perhaps by another runner, for this one): renew their leases from now on."""
        now = time.monotonic()
        with self._lock:
            for claimed in jobs:
                self._jobs[claimed.id] = Running(queue, claimed, now)

    def add(self, running: Running) -> None:
        with self._lock:
            self._jobs[running.claimed.id] = running

    def get(self, job_id: str) -> Running | None:
        return self._jobs.get(job_id)  # a dict read: atomic without the lock

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def forget_many(self, job_ids: list[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._jobs.pop(job_id, None)

    def is_current(self, running: Running) -> bool:
        with self._lock:
            return self._jobs.get(running.claimed.id) is running

    def snapshot(self) -> list[Running]:
        with self._lock:
            return list(self._jobs.values())

    def of_queue(self, queue: RedisJobQueue) -> list[Running]:
        with self._lock:
            return [r for r in self._jobs.values() if r.queue is queue]

    def as_json(self) -> str:
        """JSON list of [queue, id, token] of the jobs running now (for the worker's record)."""
        with self._lock:
            jobs = [[r.queue.queue_name, r.claimed.id, r.claimed.claim_token] for r in self._jobs.values()]
        return json.dumps(jobs)

    # ------------------------------------------------------------ runners

    def runner_busy(self, ident: int | None) -> None:
        self._busy.add(ident)  # one set operation: atomic without the lock

    def runner_free(self, ident: int | None) -> None:
        """The runner handed its job over (to the event loop of async jobs) and claims again."""
        self._busy.discard(ident)

    def is_busy(self, ident: int | None) -> bool:
        with self._lock:
            return ident in self._busy

    def acking(self, job_id: str) -> None:
        """The job's completion is about to be sent with the next claim: it
        stays running until then."""
        self._acking.add(job_id)  # before the ack can be sent; read under the lock in finished()

    def finished(self, job_id: str, ident: int | None, *, completed: bool) -> None:
        """A runner is done with a job: it is no longer running, unless its
        completion is still on its way (then the ack forgets it)."""
        with self._lock:
            if not completed or job_id not in self._acking:
                self._jobs.pop(job_id, None)
            self._acking.discard(job_id)
            self._busy.discard(ident)
