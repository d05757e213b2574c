"""A worker's presence in Redis: its record and heartbeat, and what happens to
the jobs of workers that are gone.

Each worker keeps a record (``<prefix>:worker:<id>``: host, pid, queues,
concurrency, state, the jobs it runs) and a heartbeat in ``<prefix>:workers``.
A worker whose heartbeat lapses is taken for lost by whichever worker sweeps
next, and its jobs go back to pending at once, without waiting out their
leases. A worker that restarts recognises its earlier self (same id, or a dead
pid on this host) and does the same, or dead-letters those jobs when its queue
says not to retry jobs that were running before a restart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import scripts
from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .keys import GlobalKeys
from .queue import ClaimedJob, RedisJobQueue

logger = logging.getLogger("django_jobqueue.worker")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Presence:
    def __init__(
        self, worker_id: str, queues: Sequence[RedisJobQueue], concurrency: int, job_list: Callable[[], str]
    ) -> None:
        self.worker_id = worker_id
        self.queues = list(queues)
        self.concurrency = concurrency
        self.settings = get_settings()
        self.keys = GlobalKeys(self.settings.key_prefix, self.settings.cluster)
        # JSON list of [queue, id, token] of the jobs running now.
        self._job_list = job_list
        self._record: list[str] = []  # the static fields of our record

    def register(self) -> None:
        """Hand back what an earlier process of ours left running, then beat."""
        self.recover_own_orphans()
        self._record = [
            "id",
            self.worker_id,
            "host",
            socket.gethostname(),
            "pid",
            str(os.getpid()),
            "queues",
            json.dumps([q.queue_name for q in self.queues]),
            "concurrency",
            str(self.concurrency),
            "started_at_ms",
            str(int(time.time() * 1000)),
        ]
        self.beat(stopping=False)

    def beat(self, *, stopping: bool) -> None:
        # The whole record every time: if a sweeper took it for lapsed while we
        # were paused, the next beat puts back all of it, not just the state.
        state = "stopping" if stopping else "running"
        fields = [*self._record, "state", state, "jobs", self._job_list()]
        scripts.get("heartbeat")(
            get_client(), [self.keys.workers, self.keys.worker(self.worker_id)], [0, self.worker_id, *fields]
        )

    def deregister(self) -> None:
        client = get_client()
        client.zrem(self.keys.workers, self.worker_id)
        client.delete(self.keys.worker(self.worker_id))

    def reclaim_lapsed(self) -> None:
        """Take the records of workers whose heartbeat lapsed (atomically: of
        two sweepers one gets each) and hand their jobs back."""
        lapse_ms = int(self.settings.worker_timeout_seconds * 1000)
        taken = scripts.get("lapsed")(get_client(), [self.keys.workers, self.keys.worker_prefix], [0, lapse_ms, 50])
        it = iter(taken)
        for wid, queues in zip(it, it, strict=True):
            if _s(wid) == self.worker_id:
                continue  # our own beat was late (a pause); the next beat re-registers us
            self.reclaim_worker_jobs(_s(wid), _s(queues), restarted=False)

    def recover_own_orphans(self) -> None:
        """Jobs left running by an earlier process of this worker (same id, or
        a dead pid on this host): back to pending now, or dead-lettered when the
        queue says not to retry jobs that were running before a restart."""
        client = get_client()
        host = socket.gethostname()
        for raw_wid in client.zrange(self.keys.workers, 0, -1):
            wid = _s(raw_wid)
            record = {_s(k): _s(v) for k, v in client.hgetall(self.keys.worker(wid)).items()}
            mine = wid == self.worker_id
            if not mine and record.get("host") == host and record.get("pid", "").isdigit():
                mine = int(record["pid"]) != os.getpid() and not _pid_alive(int(record["pid"]))
            if not mine:
                continue
            self.reclaim_worker_jobs(wid, record.get("queues", ""), restarted=True)
            client.zrem(self.keys.workers, wid)
            client.delete(self.keys.worker(wid))

    def reclaim_worker_jobs(self, wid: str, queues_json: str, *, restarted: bool) -> None:
        """Hand back (or, after a restart with RETRY_JOBS_RUNNING_BEFORE_RESTART
        off, dead-letter) every job the worker ``wid`` was running."""
        try:
            names = json.loads(queues_json)
            assert isinstance(names, list) and all(isinstance(n, str) for n in names)
        except (ValueError, AssertionError):
            logger.error("worker %s left an unreadable queue list %r; checking every queue", wid, queues_json[:200])
            names = list(self.settings.queues)
        for qname in names:
            try:
                queue = get_queue(qname)
                qs = self.settings.queue(qname)
            except LookupError:
                continue
            if restarted and not qs.retry_jobs_running_before_restart:
                dead = 0
                for job_id in queue.client.smembers(queue.keys.worker_jobs(wid)):
                    fields = queue.get_fields(_s(job_id))
                    if fields and fields.get("worker") == wid and fields.get("status") == "processing":
                        claimed = ClaimedJob.from_fields(fields)
                        queue.fail_outcome(claimed, "worker restarted while the job was running", terminal=True)
                        dead += 1
                if dead:
                    logger.warning("worker %s restarted: %d running job(s) of %s dead-lettered", wid, dead, qname)
                continue
            ids = queue.reclaim_worker_jobs([wid])
            if ids:
                logger.warning(
                    "worker %s lost: %d job(s) of %s back to pending: %s", wid, len(ids), qname, ", ".join(ids)
                )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
