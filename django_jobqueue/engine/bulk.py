"""Changes to many jobs at once, for the admin and ``jobq_jobs``: an action on
each of a list of ids, retrying every failed job, emptying a list.

Each job's change is one script call of the engine (retry, requeue now,
delete, purge.lua in chunks), so a bulk change stopped halfway leaves every
job in one state or the other, never between.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import scripts
from .browse import _s, list_key, list_length, valid_job_id
from .queue import RedisJobQueue
from .queue_ops import Refusal
from .replies import Outcome

# The statuses a job on each list has; purge deletes the hashes of those only.
LIST_STATUSES: dict[str, tuple[str, ...]] = {
    "scheduled": ("scheduled",),
    "pending": ("pending",),
    "completed": ("completed", "cancelled"),  # cancelled jobs join the finished history
    "failed": ("failed", "lost"),
}
PURGEABLE = tuple(LIST_STATUSES)  # never "processing": those jobs are running
PURGE_CHUNK = 500
RETRY_CHUNK = 500


@dataclass
class BulkResult:
    done: int = 0
    skipped: int = 0
    left: int = 0


def apply(queue: RedisJobQueue, action: str, ids: Iterable[str]) -> dict[Outcome | Refusal, list[str]]:
    """Run ``retry``, ``requeue`` (now) or ``delete`` on each job ID; returns the IDs by outcome."""
    op = {"retry": queue.retry, "requeue": queue.requeue_now, "delete": queue.delete}[action]
    out: dict[Outcome | Refusal, list[str]] = {}
    for job_id in ids:
        outcome = op(job_id) if valid_job_id(job_id) else Outcome.MISSING
        out.setdefault(outcome, []).append(job_id)
    return out


def retry_all_failed(queue: RedisJobQueue, limit: int = 10_000) -> BulkResult:
    """Retry up to ``limit`` jobs of the failed list, newest first, in chunks.

    Jobs that cannot be retried (a hash gone, a status retry refuses) stay
    where they are and are counted as skipped.
    """
    result = BulkResult()
    key = queue.keys.failed
    while result.done + result.skipped < limit:
        want = min(RETRY_CHUNK, limit - result.done - result.skipped)
        # Retried ids leave the list; skipped ones stay at its head.
        ids = [_s(i) for i in queue.client.lrange(key, result.skipped, result.skipped + want - 1)]
        if not ids:
            break
        for job_id in ids:
            if queue.retry(job_id) is Outcome.OK:
                result.done += 1
            else:
                result.skipped += 1
    result.left = int(queue.client.llen(key))
    return result


def purge(queue: RedisJobQueue, which: str) -> BulkResult:
    """Empty one list (not processing), deleting the hashes of its jobs.

    Runs purge.lua in chunks until the list is empty or as many ids as it held
    at the start are gone, so jobs added meanwhile are not chased forever.
    ``done`` counts the job hashes deleted, ``skipped`` the ids that were only
    dropped (stale duplicates, hashes already expired).
    """
    if which not in PURGEABLE:
        raise ValueError(f"the {which} list cannot be purged")
    result = _purge_list(queue, list_key(queue, which), which, list_length(queue, which))
    if which == "pending":
        # Pending jobs set aside for their concurrency key (lua/_jobs.lua) go too.
        for key in queue.client.zrange(queue.keys.waiting_keys, 0, -1):
            waiting = queue.keys.key_waiting_prefix + _s(key)
            more = _purge_list(queue, waiting, which, queue.client.llen(waiting))
            result.done += more.done
            result.skipped += more.skipped
            if more.left == 0:
                queue.client.zrem(queue.keys.waiting_keys, key)
    result.left = list_length(queue, which)
    return result


def _purge_list(queue: RedisJobQueue, key: str, which: str, budget: int) -> BulkResult:
    """purge.lua on one list, in chunks, at most ``budget`` ids."""
    result = BulkResult()
    script = scripts.get("purge")
    kind = "zset" if which == "scheduled" else "list"
    while budget > 0:
        taken, deleted, left = script(
            queue.client,
            script.keys_for(queue.keys, purged=key),
            script.argv_for(now=0, kind=kind, limit=min(PURGE_CHUNK, budget), statuses=LIST_STATUSES[which]),
        )
        taken, deleted = int(taken), int(deleted)
        result.done += deleted
        result.skipped += taken - deleted
        result.left = int(left)
        budget -= taken
        if taken == 0:
            break
    return result
