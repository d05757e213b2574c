"""A worker's presence in Redis: its record and heartbeat, and what happens to
the jobs of workers that are gone.

Each worker keeps a record (``<prefix>:worker:<id>``: host, pid, queues,
concurrency, state, the jobs it runs) and a heartbeat in ``<prefix>:workers``.
A worker whose heartbeat lapses is taken for lost by whichever worker sweeps
next, and its jobs go back to pending at once, without waiting out their
leases. A worker that restarts recognises its earlier self (same id, or a dead
pid on this host, and never a record whose heartbeat is fresh) and does the
same, or dead-letters those jobs when its queue says not to retry jobs that
were running before a restart.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..api import get_queue
from ..conf import get_settings
from ..connection import get_client
from ..engine import scripts
from ..engine.keys import GlobalKeys
from ..engine.queue import RedisJobQueue
from ..engine.replies import ClaimedJob
from . import joblog

logger = logging.getLogger("django_jobqueue.worker")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WorkerIdInUse(RuntimeError):
    """Another live worker process registered with this worker id."""


class Presence:
    """A worker's record and heartbeat, and the takeover of lost workers' jobs.

    Every process has a random boot id, stored in its record: a record is
    "ours" only if it carries our boot id. A record with a fresh heartbeat is
    never taken for an earlier self of ours (containers sharing a hostname,
    each with pid 1, look alike otherwise), and another worker is judged lost
    only while our own beats have reached the registry steadily for a whole
    WORKER_TIMEOUT_SECONDS: if the registry was away (a failover), every
    worker's beat looks old through no fault of its own.
    """

    def __init__(
        self,
        worker_id: str,
        queues: Sequence[RedisJobQueue],
        concurrency: int,
        job_list: Callable[[], str],
        *,
        on_dead_lettered: Callable[[RedisJobQueue, list[str]], None] = lambda q, ids: None,
    ) -> None:
        self.worker_id = worker_id
        # Told the jobs a lost worker's reclaim dead-lettered (their last
        # attempt died with it): the worker calls their hooks, elsewhere.
        self._on_dead_lettered = on_dead_lettered
        self.boot_id = new_boot_id()
        self.queues = list(queues)
        self.concurrency = concurrency
        self.settings = get_settings()
        self.keys = GlobalKeys(self.settings.key_prefix, self.settings.cluster)
        # JSON list of [queue, id, token] of the jobs running now.
        self._job_list = job_list
        self._record: list[str] = []  # the static fields of our record
        # Since when our beats have reached the registry without a gap that
        # could have made another worker's beat lapse (None: the last failed).
        self._steady_since: float | None = None
        self._last_beat_ok = float("-inf")

    def register(self) -> None:
        """Hand back what an earlier process of ours left running, then beat."""
        self.recover_own_orphans()
        self._record = [
            "id",
            self.worker_id,
            "boot",
            self.boot_id,
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

    def beat(self, *, stopping: bool) -> bool:
        """Renew our record and heartbeat. True when this beat ends a gap in
        our beats long enough for another worker to have taken us for lost."""
        # The whole record every time: if a sweeper took it for lapsed while we
        # were paused, the next beat puts back all of it, not just the state.
        state = "stopping" if stopping else "running"
        fields = [*self._record, "state", state, "jobs", self._job_list()]
        try:
            script = scripts.get("heartbeat")
            script(
                get_client(),
                script.keys_for(self.keys, worker=self.keys.worker(self.worker_id)),
                script.argv_for(now=0, worker_id=self.worker_id, fields=fields),
            )
        except Exception:
            self._steady_since = None
            raise
        now = time.monotonic()
        gap = now - self._last_beat_ok > self._max_gap()
        if self._steady_since is None or gap:
            self._steady_since = now
        first = self._last_beat_ok == float("-inf")
        self._last_beat_ok = now
        return gap and not first

    def _max_gap(self) -> float:
        # A gap this long between our own beats may be a registry outage long
        # enough for other workers' beats to lapse (WORKER_TIMEOUT_SECONDS is
        # at least 3 x HEARTBEAT_SECONDS, so half of it is past a late beat).
        return self.settings.worker_timeout_seconds / 2

    def steady(self) -> bool:
        """Whether our beats have reached the registry steadily for a whole
        worker timeout (so a worker whose beat lapsed could have beaten)."""
        since = self._steady_since
        if since is None or time.monotonic() - self._last_beat_ok > self._max_gap():
            return False
        return time.monotonic() - since >= self.settings.worker_timeout_seconds

    def deregister(self) -> None:
        client = get_client()
        client.zrem(self.keys.workers, self.worker_id)
        client.delete(self.keys.worker(self.worker_id))

    def reclaim_lapsed(self) -> None:
        """Take the records of workers whose heartbeat lapsed (atomically: of
        two sweepers one gets each) and hand their jobs back; only while our
        own beats are steady (see the class's docstring)."""
        if not self.steady():
            return
        lapse_ms = int(self.settings.worker_timeout_seconds * 1000)
        script = scripts.get("lapsed")
        taken = script(get_client(), script.keys_for(self.keys), script.argv_for(now=0, lapse_ms=lapse_ms, limit=50))
        it = iter(taken)
        for wid, queues in zip(it, it, strict=True):
            if _s(wid) == self.worker_id:
                continue  # our own beat was late (a pause); the next beat re-registers us
            self.reclaim_worker_jobs(_s(wid), _s(queues), restarted=False)

    def recover_own_orphans(self) -> None:
        """Jobs left running by an earlier process of this worker: back to
        pending now, or dead-lettered when the queue says not to retry jobs
        that were running before a restart.

        An earlier self is a record with our worker id, or one of this host
        whose pid is not alive here; either only once its heartbeat is stale,
        unless it has our id and a pid of this host that is not alive (a
        restart within one heartbeat). A record with our id that keeps beating
        is another live worker: WorkerIdInUse is raised rather than share it.
        """
        client = get_client()
        host = socket.gethostname()
        lapse_ms = self.settings.worker_timeout_seconds * 1000
        deadline = time.monotonic() + self.settings.worker_timeout_seconds + 2 * self.settings.heartbeat_seconds
        while True:
            now_ms = _server_ms(client)
            waiting_on = None
            for raw_wid, beat in client.zrange(self.keys.workers, 0, -1, withscores=True):
                wid = _s(raw_wid)
                record = {_s(k): _s(v) for k, v in client.hgetall(self.keys.worker(wid)).items()}
                if record.get("boot") == self.boot_id:
                    continue  # our own: a register() tried again after its beat's reply was lost
                same_id = wid == self.worker_id
                pid = record.get("pid", "")
                dead_here = (
                    record.get("host") == host
                    and pid.isdigit()
                    and int(pid) != os.getpid()
                    and not _pid_alive(int(pid))
                )
                fresh = now_ms - beat < lapse_ms
                if same_id and fresh and not dead_here:
                    waiting_on = wid
                    continue
                if not (same_id or (dead_here and not fresh)):
                    continue
                self.reclaim_worker_jobs(wid, record.get("queues", ""), restarted=True)
                client.zrem(self.keys.workers, wid)
                client.delete(self.keys.worker(wid))
            if waiting_on is None:
                return
            if time.monotonic() > deadline:
                raise WorkerIdInUse(
                    f"another worker with the id {self.worker_id!r} is alive (its heartbeat goes on): "
                    "give each worker its own --worker-id"
                )
            logger.warning(
                "worker id %s: a record with a fresh heartbeat exists (a worker restarted within a "
                "heartbeat, or another worker using this id); waiting for it to lapse",
                self.worker_id,
            )
            time.sleep(self.settings.heartbeat_seconds)

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
                        if not claimed.started:
                            # Claimed ahead, never run: back to pending as it was.
                            queue.requeue(claimed, count_attempt=False, front=True, event="released")
                            continue
                        reason = "worker restarted while the job was running"
                        if queue.fail_outcome(claimed, reason, terminal=True):
                            joblog.log_cut_off(
                                claimed, qname, f"{reason} (RETRY_JOBS_RUNNING_BEFORE_RESTART is off)", "failed"
                            )
                        dead += 1
                if dead:
                    logger.warning("worker %s restarted: %d running job(s) of %s dead-lettered", wid, dead, qname)
                continue
            result = queue.take_back_worker_jobs([wid])
            ids = result.reclaimed
            if ids:
                logger.warning(
                    "worker %s lost: %d job(s) of %s back to pending: %s", wid, len(ids), qname, ", ".join(ids)
                )
            if result.dead_lettered or result.expired:
                logger.warning(
                    "worker %s lost: of %s, %d job(s) dead-lettered (attempts used up, or at-most-once: lost): %s; "
                    "%d past their TTL, expired",
                    wid,
                    qname,
                    len(result.dead_lettered),
                    ", ".join(result.dead_lettered),
                    len(result.expired),
                )
                self._on_dead_lettered(queue, result.dead_lettered)


def new_boot_id() -> str:
    """A random id for this process's life (pids repeat across containers)."""
    return secrets.token_hex(8)


def _server_ms(client: Any) -> float:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) / 1000


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
