"""One validation path for job options, shared by @job and enqueue().

Every bad option becomes an InvalidJobOptions whose message names the option
and the value, before anything is written to Redis.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.utils import timezone

from .exceptions import InvalidJobOptions

MAX_ATTEMPTS_LIMIT = 10_000
MAX_UNIQUE_KEY_LENGTH = 200
# Options a caller may give to enqueue(); @job takes these as defaults too.
ENQUEUE_OPTIONS = frozenset(
    {
        "queue",
        "delay",
        "run_at",
        "max_attempts",
        "ttl",
        "unique_key",
        "on_commit",
        "keep_result",
        "delivery",
        "max_nacks",
        "max_deliveries",
        "replicas",
        "replication_timeout_ms",
        "concurrency_key",
        "concurrency",
    }
)
DELIVERY_MODES = ("at-least-once", "at-most-once")
MAX_REPLICAS = 100
MAX_CONCURRENCY_KEY_LENGTH = 200
# The most jobs of one concurrency key that may run at once (a key's slots are
# read one by one when full: docs/flow-control.md).
MAX_KEY_CONCURRENCY = 100


@dataclass(frozen=True)
class EnqueueOptions:
    queue: str | None = None
    delay_ms: int = 0
    ttl_ms: int = 0
    unique_key: str = ""
    max_attempts: int | None = None
    on_commit: bool = False
    keep_result: bool = True
    delivery: str = "at-least-once"
    max_nacks: int | None = None
    max_deliveries: int | None = None
    # None: the queue's REPLICAS / REPLICATION_TIMEOUT_MS.
    replicas: int | None = None
    replication_timeout_ms: int | None = None
    # A key value, or a function of the payload giving it (from @job); with
    # ``concurrency``, at most that many jobs of one key value run at once.
    concurrency_key: str | Callable[[Any], Any] | None = None
    concurrency: int = 1

    def key_fields(self, payload: Any) -> dict[str, str]:
        """The job hash fields of its concurrency key for ``payload`` (none
        without a key), or InvalidJobOptions when the key function fails or
        gives something that is not a short printable value."""
        key = self.concurrency_key
        if key is None:
            return {}
        if callable(key):
            try:
                key = key(payload)
            except Exception as exc:
                raise InvalidJobOptions(f"concurrency_key raised {type(exc).__name__}: {exc}") from exc
            if isinstance(key, int) and not isinstance(key, bool):
                key = str(key)
        return {"concurrency_key": _key_value(key), "concurrency": str(self.concurrency)}

    def hash_fields(self) -> dict[str, str] | None:
        """Options the worker needs later, stored on the job hash."""
        fields: dict[str, str] = {}
        if not self.keep_result:
            fields["keep_result"] = "0"
        if self.delivery != "at-least-once":
            fields["delivery"] = self.delivery
        if self.max_nacks is not None:
            fields["max_nacks"] = str(self.max_nacks)
        if self.max_deliveries is not None:
            fields["max_deliveries"] = str(self.max_deliveries)
        return fields or None


def seconds_to_ms(name: str, value: Any, *, allow_zero: bool = True) -> int:
    """Seconds (int, float or timedelta) as whole ms, or InvalidJobOptions."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobOptions(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise InvalidJobOptions(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidJobOptions(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}")
    return int(math.ceil(value * 1000))


def _run_at_delay_ms(run_at: Any) -> int:
    if not isinstance(run_at, dt.datetime):
        raise InvalidJobOptions(f"run_at must be a datetime, got {run_at!r}")
    if timezone.is_naive(run_at):
        if getattr(django_settings, "USE_TZ", True):
            raise InvalidJobOptions(f"run_at must be an aware datetime when USE_TZ is on, got naive {run_at!r}")
        run_at = timezone.make_aware(run_at)
    delta = (run_at - timezone.now()).total_seconds()
    return max(0, int(math.ceil(delta * 1000)))


def validate(options: Mapping[str, Any], *, where: str = "enqueue()") -> EnqueueOptions:
    """Check enqueue options; unknown names and bad values raise InvalidJobOptions."""
    unknown = sorted(set(options) - ENQUEUE_OPTIONS)
    if unknown:
        raise InvalidJobOptions(f"{where} got unknown option(s): {', '.join(unknown)}")
    queue = options.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise InvalidJobOptions(f"queue must be a queue name, got {queue!r}")
    delay = options.get("delay")
    run_at = options.get("run_at")
    if delay is not None and run_at is not None:
        raise InvalidJobOptions("give delay or run_at, not both")
    delay_ms = 0
    if delay is not None:
        delay_ms = seconds_to_ms("delay", delay)
    elif run_at is not None:
        delay_ms = _run_at_delay_ms(run_at)
    ttl = options.get("ttl")
    ttl_ms = 0 if ttl is None else seconds_to_ms("ttl", ttl, allow_zero=False)
    if ttl_ms and ttl_ms <= delay_ms:
        raise InvalidJobOptions(f"ttl ({ttl!r}) must be longer than the delay before the job runs")
    unique_key = options.get("unique_key") or ""
    if unique_key and (
        not isinstance(unique_key, str) or len(unique_key) > MAX_UNIQUE_KEY_LENGTH or not unique_key.isprintable()
    ):
        raise InvalidJobOptions(
            f"unique_key must be printable text of at most {MAX_UNIQUE_KEY_LENGTH} characters, got {unique_key!r}"
        )
    max_attempts = options.get("max_attempts")
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidJobOptions(f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}, got {max_attempts!r}")
    delivery = options.get("delivery", "at-least-once")
    if delivery not in DELIVERY_MODES:
        raise InvalidJobOptions(f"delivery must be one of {', '.join(DELIVERY_MODES)}, got {delivery!r}")
    for name, low, high in (
        ("max_nacks", 1, MAX_ATTEMPTS_LIMIT),
        ("max_deliveries", 1, MAX_ATTEMPTS_LIMIT),
        ("replicas", 0, MAX_REPLICAS),
        ("replication_timeout_ms", 1, 3_600_000),
    ):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise InvalidJobOptions(f"{name} must be an integer from {low} to {high}, got {value!r}")
    given = options.get("concurrency_key")
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    key: str | Callable[[Any], Any] | None = given if given is None or callable(given) else _key_value(given)
    concurrency = options.get("concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_KEY_CONCURRENCY:
        raise InvalidJobOptions(f"concurrency must be an integer from 1 to {MAX_KEY_CONCURRENCY}, got {concurrency!r}")
    if "concurrency" in options and key is None:
        raise InvalidJobOptions("concurrency limits the jobs of one concurrency_key: give a concurrency_key too")
    for flag in ("on_commit", "keep_result"):
        if flag in options and not isinstance(options[flag], bool):
            raise InvalidJobOptions(f"{flag} must be True or False, got {options[flag]!r}")
    return EnqueueOptions(
        queue=queue,
        delay_ms=delay_ms,
        ttl_ms=ttl_ms,
        unique_key=unique_key,
        max_attempts=max_attempts,
        on_commit=bool(options.get("on_commit", False)),
        keep_result=bool(options.get("keep_result", True)),
        delivery=delivery,
        max_nacks=options.get("max_nacks"),
        max_deliveries=options.get("max_deliveries"),
        replicas=options.get("replicas"),
        replication_timeout_ms=options.get("replication_timeout_ms"),
        concurrency_key=key,
        concurrency=concurrency,
    )


def _key_value(key: Any) -> str:
    """A concurrency key value as stored, or InvalidJobOptions."""
    if not isinstance(key, str) or not key or len(key) > MAX_CONCURRENCY_KEY_LENGTH or not key.isprintable():
        raise InvalidJobOptions(
            "concurrency_key must be (or give, from the payload) printable text of 1 to "
            f"{MAX_CONCURRENCY_KEY_LENGTH} characters or an integer, got {key!r}"
        )
    return key
