"""The values the engine hands back, and the helpers that read Redis replies into them.

Outcome (what a token-checked operation did), ClaimedJob (a job a worker
holds), SweepResult (what a sweep did), and the small decoders that turn the
scripts' replies into those. Every part of the engine uses them (the hot path
in queue.py, the by-id and whole-queue operations in queue_ops.py), and so do
the worker and the admin, while none of them needs RedisJobQueue itself.
Users import them from ``django_jobqueue.queue``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import serialization
from .exceptions import CorruptJobError


class Outcome(enum.Enum):
    """What a token-checked operation did."""

    OK = "ok"  # done (completed, requeued, touched, deleted)
    RETRYING = "retrying"  # fail(): the job will run again
    FAILED = "failed"  # fail(): the job is dead-lettered on the failed list
    MISSING = "missing"  # no such job hash
    NOT_OWNER = "not_owner"  # the claim token is not the current claim's
    EXPIRED = "expired"  # start(): the job's TTL had passed; it ended expired, not to be run
    CANCELLED = "cancelled"  # start(): its cancellation was asked; not started, not to be run

    def __bool__(self) -> bool:
        return self in (Outcome.OK, Outcome.RETRYING, Outcome.FAILED)


_CODES = {1: Outcome.OK, 0: Outcome.MISSING, -1: Outcome.NOT_OWNER}
_FAIL_CODES = {1: Outcome.RETRYING, 2: Outcome.FAILED, 0: Outcome.MISSING, -1: Outcome.NOT_OWNER}
_START_CODES = {1: Outcome.OK, 2: Outcome.EXPIRED, 3: Outcome.CANCELLED, 0: Outcome.MISSING, -1: Outcome.NOT_OWNER}


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_paused(res: Any) -> bool:
    return isinstance(res, list) and len(res) == 1 and _s(res[0]) == "paused"


def limited_wait_ms(res: Any) -> int | None:
    """A claim's reply {"limited", ms} (the queue's flow limits let no job out:
    lua/_limits.lua): the ms until the rate allows one, 0 when a slot of the
    global concurrency must free first; None for any other reply."""
    if isinstance(res, list) and len(res) == 2 and not isinstance(res[0], list) and _s(res[0]) == "limited":
        return int(res[1])
    return None


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    if flat and isinstance(flat[0], str):
        # decode_responses: every field and value of a hash is text already.
        return dict(zip(it, it, strict=True))
    return {_s(k): _s(v) for k, v in zip(it, it, strict=True)}


def _int(fields: Mapping[str, str], key: str, default: int = 0) -> int:
    try:
        return int(fields.get(key) or default)
    except ValueError:
        return default


@dataclass
class ClaimedJob:
    """A job this worker holds. ``claim_token`` is its proof of ownership."""

    id: str
    payload: Any
    attempts: int
    claim_token: str
    name: str = ""
    queue: str = ""
    max_attempts: int = 0
    fields: dict[str, str] = field(default_factory=dict, repr=False)
    # Set when the stored payload could not be decoded; payload is then None.
    payload_error: str | None = None
    # The worker must tell Redis the run begins (RedisJobQueue.start) right
    # before it calls the handler: the run is the job's only chance.
    needs_start: bool = False

    @property
    def started(self) -> bool:
        """Whether Redis knows this claim's run began (a job claimed ahead of a
        free runner is not started until its worker starts it: RedisJobQueue.start)."""
        return bool(self.claim_token) and self.fields.get("started") == self.claim_token

    @property
    def last_chance(self) -> bool:
        """Whether the run about to begin is the job's only chance: an
        at-most-once job, or the last of its attempts (a run cut off by a kill
        is then its end, so it is started in Redis only as its handler is called)."""
        if self.fields.get("delivery") == "at-most-once":
            return True
        tries = self.attempts if self.started else self.attempts + 1
        return self.max_attempts > 0 and tries >= self.max_attempts

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ClaimedJob:
        payload, error = None, None
        try:
            payload = serialization.loads(fields.get("payload"))
        except CorruptJobError as exc:
            error = str(exc)
        return cls(
            id=fields.get("id", ""),
            payload=payload,
            attempts=_int(fields, "attempts"),
            claim_token=fields.get("claim_token", ""),
            name=fields.get("name", ""),
            queue=fields.get("queue", ""),
            max_attempts=_int(fields, "max_attempts"),
            fields=fields,
            payload_error=error,
        )


@dataclass
class SweepResult:
    promoted: int = 0
    reclaimed: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    # ms until the next scheduled job is due, or None when none is scheduled.
    next_due_ms: int | None = None
