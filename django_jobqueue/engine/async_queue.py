"""Enqueueing from asyncio: a queue's enqueue() and enqueue_many(), awaited
on a ``redis.asyncio`` client, with no thread in between.

The queue (queue.py) builds the script calls and reads their replies, as it
does for its own enqueue; this only sends them, through aio.py. So the
writes, the checks and the errors are the synchronous ones: a job is added
atomically, an id already written is recognised when a call is sent again,
a paused queue raises QueuePaused, too few replicas ReplicationError.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import aio
from .queue import RedisJobQueue, _ids_added


class AsyncEnqueuer:
    """``await enqueue_encoded(...)`` and ``await enqueue_many(...)`` for one queue,
    on one event loop's client."""

    def __init__(self, queue: RedisJobQueue, client: Any) -> None:
        self.queue = queue
        self.client = client

    async def enqueue_encoded(
        self, payload_json: str, *, replicas: int = 0, replication_timeout_ms: int = 1000, **options: Any
    ) -> str:
        """RedisJobQueue.enqueue_encoded(), awaited."""
        script, keys, args = call = self.queue._enqueue_call(payload_json, **options)
        job_id = str(args[1])  # ARGV[2]: the id, chosen or checked by _enqueue_call
        if replicas:
            (reply,), acked = await aio.run_pipeline(self.client, [call], (replicas, replication_timeout_ms))
            self.queue.check_replicated([job_id] if reply == 1 else [], acked, replicas, replication_timeout_ms)
        else:
            reply = await aio.call_idempotent(self.client, script, keys, args)
        return self.queue.enqueued(reply, job_id)

    async def enqueue_many(
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
        """RedisJobQueue.enqueue_many(), awaited: every payload checked before
        anything is written, then one pipeline per chunk."""
        plan = self.queue.bulk_plan(
            payloads, name=name, delay_ms=delay_ms, ttl_ms=ttl_ms, max_attempts=max_attempts, extra=extra
        )
        ids: list[str] = []
        for batches, calls in plan:
            results, acked = await aio.run_pipeline(
                self.client, calls, (replicas, replication_timeout_ms) if replicas else None
            )
            if replicas:
                self.queue.check_replicated(_ids_added(batches, results), acked, replicas, replication_timeout_ms)
            self.queue.bulk_written(batches, results, ids)
        return ids
