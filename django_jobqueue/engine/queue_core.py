"""QueueCore: what every operation of a queue reads.

The client, the key names, the queue's limits and lifetimes, the clock and
the JSON encoder: set once when the queue is made. QueueOperations
(queue_ops.py) and RedisJobQueue (queue.py) extend it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from . import serialization
from .keys import QueueKeys
from .limits import FlowLimits

# How long the hash of an expired job is kept by default: a day (the CLEANUP
# setting EXPIRED_AFTER_SECONDS changes it). No list holds an expired job, so
# purge cannot reach it: without a TTL its hash would stay until deleted by id.
EXPIRED_TTL_S = 86_400

# Dead letters kept per queue by default (the FAILED_HISTORY setting changes
# it): the oldest past it are dropped by the sweep, counted and logged.
FAILED_HISTORY = 10_000


class QueueCore:
    """One queue's settings on one Redis (use RedisJobQueue, which adds the operations).

    ``clock`` returns the time in ms to use for every state change; by default
    (None) scripts read the Redis server's clock, so leases of workers on
    different machines are judged against one clock.
    """

    # Dead letters kept (None: no count bound); api.make_queue() sets it from
    # FAILED_HISTORY. The sweep drops the oldest past it.
    failed_history: int | None = FAILED_HISTORY
    # Seconds an expired job's hash is kept (0: for ever); api.make_queue()
    # sets it from CLEANUP. None (an engine made by hand): see expired_ttl_s().
    expired_ttl: int | None = None

    # Payloads and results are encoded with this (compact JSON, NaN refused);
    # a subclass may set an encoder of its own kind (serialization.make_encoder).
    json_encoder: ClassVar[json.JSONEncoder] = serialization.PLAIN

    def __init__(
        self,
        redis_client: Any,
        queue_name: str = "jobs",
        *,
        visibility_ms: int = 5000,
        max_attempts: int = 3,
        key_prefix: str = "queue",
        history: int = 10_000,
        completed_ttl_s: int | None = 3600,
        failed_ttl_s: int | None = None,
        max_payload_bytes: int = 1024 * 1024,
        result_event_bytes: int = 8192,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
        cluster: bool = False,
        clock: Callable[[], int] | None = None,
        limits: FlowLimits | None = None,
    ) -> None:
        self.client = redis_client
        self.queue_name = queue_name
        self.keys = QueueKeys(key_prefix, queue_name, cluster)
        self.visibility_ms = int(visibility_ms)
        self.max_attempts = int(max_attempts)
        self.history = int(history)  # completed jobs kept (-1: no count bound; complete.lua trims)
        self.completed_ttl_s = int(completed_ttl_s or 0)
        self.failed_ttl_s = int(failed_ttl_s or 0)
        self.max_payload_bytes = max_payload_bytes
        self.result_event_bytes = result_event_bytes
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.clock = clock
        # Global concurrency and rate limit from the settings (an override
        # kept in Redis wins: engine/limits.py).
        self.limits = limits or FlowLimits()

    def __repr__(self) -> str:
        return f"<RedisJobQueue {self.keys.base}>"

    def encode(self, value: Any, *, what: str = "payload") -> str:
        """``value`` as the JSON text this queue stores, or PayloadError (not
        JSON-encodable, or over ``max_payload_bytes``)."""
        return serialization.dumps(value, encoder=self.json_encoder, what=what, max_bytes=self.max_payload_bytes)

    def _now(self) -> int:
        return int(self.clock()) if self.clock is not None else 0

    def expired_ttl_s(self) -> int:
        """The hash TTL the scripts that expire jobs are given (0 = keep):
        ``expired_ttl`` when set; else failed jobs' (so an expired hash never
        outlives a failed one, as before there was a setting of its own), or
        EXPIRED_TTL_S when those are kept: they, at least, stay on a list."""
        if self.expired_ttl is not None:
            return self.expired_ttl
        return self.failed_ttl_s or EXPIRED_TTL_S
