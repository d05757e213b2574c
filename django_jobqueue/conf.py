"""The JOBQUEUE setting: documented defaults, one validation path, one cache.

Nothing is read at import time. ``get_settings()`` validates once and caches;
Django's ``setting_changed`` signal (override_settings in tests) clears the cache.
The system checks (checks.py) run the same validation and report every problem
with the key it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from django.core.signals import setting_changed
from django.dispatch import receiver

from .engine.keys import validate_name
from .engine.limits import FlowLimits, parse_rate
from .engine.redact import shown
from .exceptions import ConfigurationError
from .metrics_settings import MetricsSettings, validate_metrics

MiB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "CACHE_ALIAS": None,
    "KEY_PREFIX": "queue",
    "DEFAULT_QUEUE": "jobs",
    "CLUSTER": False,
    "SENTINELS": None,
    "SENTINEL_SERVICE": None,
    "SENTINEL_OPTIONS": {},
    "REDIS_OPTIONS": {},
    "CONNECT_TIMEOUT": 2.0,
    "SOCKET_TIMEOUT": 5.0,
    "MAX_PAYLOAD_BYTES": MiB,
    "SHUTDOWN_GRACE_SECONDS": 30.0,
    "HEARTBEAT_SECONDS": 1.0,
    "WORKER_TIMEOUT_SECONDS": 10.0,
    "SWEEP_INTERVAL_SECONDS": 1.0,
    "WORKER_EVENTS_LISTENER": False,
    "DURABLE": False,
    "QUEUES": {},
    # Periodic jobs defined in settings: name -> {"job": ..., "cron" or "every": ..., ...}
    # (docs/schedules.md); checked by schedules.py, which knows the job names.
    "SCHEDULES": {},
    # Who may read django_jobqueue.metrics.view (metrics_settings.py, docs/settings.md).
    "METRICS": {},
}

QUEUE_DEFAULTS: dict[str, Any] = {
    "VISIBILITY_MS": 30_000,
    "CONCURRENT_JOBS": 1,
    "MAX_ATTEMPTS": 3,
    # Finished jobs kept, by count (docs/settings.md, "Retention"): the oldest
    # past a bound leave their list and their hashes are deleted. None: no count
    # bound (a system check warns).
    "HISTORY": 10_000,
    "FAILED_HISTORY": 10_000,
    # Expired jobs sit on no list (purge cannot reach them): their hashes get a
    # lifetime by default. Failed ones stay on the failed list until replayed or purged.
    "CLEANUP": {"COMPLETED_AFTER_SECONDS": 3600, "FAILED_AFTER_SECONDS": None, "EXPIRED_AFTER_SECONDS": 86_400},
    "RETRY_JOBS_RUNNING_BEFORE_RESTART": True,
    "RUN_ON_STARTUP": False,
    "BACKOFF_BASE_SECONDS": 1.0,
    "BACKOFF_MAX_SECONDS": 300.0,
    "REPLICAS": 0,
    "REPLICATION_TIMEOUT_MS": 1000,
    "PREFETCH": None,
    # Flow limits held across every worker (docs/flow-control.md): most jobs of
    # the queue running at once, and most handed out per window ("10/s").
    "GLOBAL_CONCURRENCY": None,
    "RATE_LIMIT": None,
}

CLEANUP_KEYS = ("COMPLETED_AFTER_SECONDS", "FAILED_AFTER_SECONDS", "EXPIRED_AFTER_SECONDS")


@dataclass(frozen=True)
class QueueSettings:
    name: str
    visibility_ms: int
    concurrent_jobs: int
    max_attempts: int
    # Completed jobs kept (None: no count bound).
    history: int | None
    completed_after_seconds: int | None
    failed_after_seconds: int | None
    retry_jobs_running_before_restart: bool
    run_on_startup: bool
    backoff_base_seconds: float
    backoff_max_seconds: float
    replicas: int = 0
    replication_timeout_ms: int = 1000
    # Jobs a worker claims ahead of its runners; None: as many as it has runners.
    prefetch: int | None = None
    # EXPIRE on the hash of a job past its TTL; None keeps it.
    expired_after_seconds: int | None = 86_400
    # Dead letters (failed and lost jobs) kept (None: no count bound).
    failed_history: int | None = 10_000
    # GLOBAL_CONCURRENCY and RATE_LIMIT (an override set at run time wins).
    limits: FlowLimits = field(default_factory=FlowLimits)


@dataclass(frozen=True)
class Settings:
    # Out of the repr (a debug page's local variables, a log line): they may hold passwords.
    redis_url: str = field(repr=False)
    cache_alias: str | None
    key_prefix: str
    default_queue: str
    cluster: bool
    sentinels: tuple[tuple[str, int], ...] | None
    sentinel_service: str | None
    redis_options: dict[str, Any] = field(repr=False)
    connect_timeout: float
    socket_timeout: float
    max_payload_bytes: int
    shutdown_grace_seconds: float
    heartbeat_seconds: float
    worker_timeout_seconds: float
    sweep_interval_seconds: float
    durable: bool = False
    queues: dict[str, QueueSettings] = field(default_factory=dict)
    # Workers also run an events listener thread (fires the signals, events.py).
    worker_events_listener: bool = False
    # Keyword arguments for the connections to the sentinels (password, ssl, ...).
    sentinel_options: dict[str, Any] = field(default_factory=dict, repr=False)
    # JOBQUEUE["SCHEDULES"] as given (schedules.py checks and builds them).
    schedules: dict[str, Any] = field(default_factory=dict)
    # JOBQUEUE["METRICS"]: the metrics view's access checks.
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def queue(self, name: str | None = None) -> QueueSettings:
        from .exceptions import UnknownQueueError

        name = name or self.default_queue
        try:
            return self.queues[name]
        except KeyError:
            raise UnknownQueueError(
                f"unknown queue {name!r}: add it to JOBQUEUE['QUEUES'] (known: {', '.join(sorted(self.queues))})"
            ) from None


# --------------------------------------------------------------------- checks


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v not in (float("inf"), float("-inf"))


def _positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "a positive integer"


def _non_negative_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "an integer >= 0"


def _optional_count(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v >= 0) else "None (no count bound) or an integer >= 0"


def _positive_number(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else "a positive number"


def _non_negative_number(v: Any) -> str | None:
    return None if _is_number(v) and v >= 0 else "a number >= 0"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def _optional_str(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and v) else "a non-empty string or None"


def _redis_url(v: Any) -> str | None:
    # The prefixes redis-py reads (in lower case): "redis:/host" or "REDIS://host" would pass
    # a check of the scheme alone and fail later, deep inside the client.
    if isinstance(v, str) and v.startswith(("redis://", "rediss://", "unix://")):
        return None
    return "a redis://, rediss:// or unix:// URL"


def _name(v: Any) -> str | None:
    try:
        validate_name("name", v)
    except ValueError:
        return "a non-empty name without spaces or any of { } : * ? [ ] \\ quotes"
    return None


def _dict(v: Any) -> str | None:
    return None if isinstance(v, dict) else "a dict"


def _sentinels(v: Any) -> str | None:
    if v is None:
        return None
    ok = (
        isinstance(v, (list, tuple))
        and v
        and all(isinstance(s, (list, tuple)) and len(s) == 2 and isinstance(s[0], str) and _is_int(s[1]) for s in v)
    )
    return None if ok else 'None or a list of ("host", port) pairs'


_TOP_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "REDIS_URL": _redis_url,
    "CACHE_ALIAS": _optional_str,
    "KEY_PREFIX": _name,
    "DEFAULT_QUEUE": _name,
    "CLUSTER": _bool,
    "SENTINELS": _sentinels,
    "SENTINEL_SERVICE": _optional_str,
    "SENTINEL_OPTIONS": _dict,
    "REDIS_OPTIONS": _dict,
    "CONNECT_TIMEOUT": _positive_number,
    "SOCKET_TIMEOUT": _positive_number,
    "MAX_PAYLOAD_BYTES": _positive_int,
    "SHUTDOWN_GRACE_SECONDS": _non_negative_number,
    "HEARTBEAT_SECONDS": _positive_number,
    "WORKER_TIMEOUT_SECONDS": _positive_number,
    "SWEEP_INTERVAL_SECONDS": _positive_number,
    "WORKER_EVENTS_LISTENER": _bool,
    "DURABLE": _bool,
    "QUEUES": _dict,
    "SCHEDULES": _dict,
    "METRICS": _dict,
}

_QUEUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "VISIBILITY_MS": _positive_int,
    "CONCURRENT_JOBS": _positive_int,
    "MAX_ATTEMPTS": _positive_int,
    "HISTORY": _optional_count,
    "FAILED_HISTORY": _optional_count,
    "CLEANUP": _dict,
    "RETRY_JOBS_RUNNING_BEFORE_RESTART": _bool,
    "RUN_ON_STARTUP": _bool,
    "BACKOFF_BASE_SECONDS": _non_negative_number,
    "BACKOFF_MAX_SECONDS": _non_negative_number,
    "REPLICAS": _non_negative_int,
    "REPLICATION_TIMEOUT_MS": _positive_int,
    "PREFETCH": lambda v: None if v is None else _non_negative_int(v),
    "GLOBAL_CONCURRENCY": lambda v: None if v is None else _positive_int(v),
    "RATE_LIMIT": lambda v: None if v is None else _rate(v),
}


def _rate(v: Any) -> str | None:
    try:
        parse_rate(v)
    except ValueError:
        return "None or a rate like '10/s', '100/m', '1000/h' or '5/10s' (at least 1 a window)"
    return None


# Settings never quoted in an error, whatever their type: a password may be anywhere in them.
_MAY_HOLD_PASSWORDS = frozenset({"REDIS_OPTIONS", "SENTINEL_OPTIONS", "METRICS"})


def _quoting(key: str) -> Callable[[Any], str]:
    """How an error quotes the value of a top-level key: never with a password."""
    if key in _MAY_HOLD_PASSWORDS:
        return lambda value: f"a {type(value).__name__}"
    if key == "REDIS_URL":
        return lambda value: shown(value, url=True)
    return shown


def _topology_errors(top: dict[str, Any]) -> list[tuple[str, str]]:
    """Settings that do not fit the chosen topology (one Redis, Sentinel, Cluster)."""
    errors = []
    if top["SENTINEL_OPTIONS"] and not top["SENTINELS"]:
        errors.append(("JOBQUEUE['SENTINEL_OPTIONS']", "is only used with SENTINELS"))
    if top["CACHE_ALIAS"] and (top["CLUSTER"] or top["SENTINELS"]):
        which = "CLUSTER" if top["CLUSTER"] else "SENTINELS"
        errors.append(
            (f"JOBQUEUE[{which!r}]", "cannot be combined with CACHE_ALIAS (the cache's own client would be used)")
        )
    if top["CLUSTER"] is True and isinstance(top["REDIS_URL"], str) and not _redis_url(top["REDIS_URL"]):
        parts = urlsplit(top["REDIS_URL"])
        if parts.scheme == "unix":
            errors.append(("JOBQUEUE['REDIS_URL']", "must be a redis:// or rediss:// URL of a node with CLUSTER"))
        elif parts.path.strip("/") not in ("", "0"):
            errors.append(("JOBQUEUE['REDIS_URL']", "must use database 0 with CLUSTER (a cluster has no other)"))
    return errors


def _optional_seconds(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v > 0) else "None (keep) or a positive integer"


def _close_match(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    near = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def validate(raw: Any) -> tuple[Settings | None, list[tuple[str, str]]]:
    """Check a JOBQUEUE value. Returns (settings or None, [(key path, problem)])."""
    errors: list[tuple[str, str]] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [("JOBQUEUE", f"must be a dict, got {type(raw).__name__}")]

    def check(path: str, value: Any, rule: Callable[[Any], str | None], quote: Callable[[Any], str] = shown) -> None:
        want = rule(value)
        if want:
            errors.append((path, f"must be {want}, got {quote(value)}"))

    for key in raw:
        if key not in DEFAULTS:
            errors.append((f"JOBQUEUE[{key!r}]", f"is not a known setting{_close_match(str(key), DEFAULTS)}"))
    top = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    for key, rule in _TOP_CHECKS.items():
        check(f"JOBQUEUE[{key!r}]", top[key], rule, _quoting(key))
    if top["SENTINELS"] and not top["SENTINEL_SERVICE"]:
        errors.append(("JOBQUEUE['SENTINEL_SERVICE']", "must name the primary's service when SENTINELS is set"))
    if (
        _is_number(top["HEARTBEAT_SECONDS"])
        and _is_number(top["WORKER_TIMEOUT_SECONDS"])
        and top["WORKER_TIMEOUT_SECONDS"] < 3 * top["HEARTBEAT_SECONDS"]
    ):
        errors.append(("JOBQUEUE['WORKER_TIMEOUT_SECONDS']", "must be at least 3 x HEARTBEAT_SECONDS"))
    if top["SENTINELS"] and top["CLUSTER"]:
        errors.append(("JOBQUEUE['CLUSTER']", "cannot be combined with SENTINELS"))
    errors += _topology_errors(top)
    metrics, metrics_errors = validate_metrics(top["METRICS"]) if isinstance(top["METRICS"], dict) else (None, [])
    errors += metrics_errors

    raw_queues = top["QUEUES"] if isinstance(top["QUEUES"], dict) else {}
    default_queue = top["DEFAULT_QUEUE"] if isinstance(top["DEFAULT_QUEUE"], str) else "jobs"
    names = dict(raw_queues)
    names.setdefault(default_queue, {})
    queues: dict[str, QueueSettings] = {}
    for qname, qraw in names.items():
        qpath = f"JOBQUEUE['QUEUES'][{qname!r}]"
        if _name(qname):
            errors.append((qpath, f"is not a valid queue name: it must be {_name(qname)}"))
            continue
        if qraw is None:
            qraw = {}
        if not isinstance(qraw, dict):
            errors.append((qpath, f"must be a dict, got {qraw!r}"))
            continue
        for key in qraw:
            if key not in QUEUE_DEFAULTS:
                errors.append(
                    (f"{qpath}[{key!r}]", f"is not a known queue setting{_close_match(str(key), QUEUE_DEFAULTS)}")
                )
        qs = {**QUEUE_DEFAULTS, **{k: v for k, v in qraw.items() if k in QUEUE_DEFAULTS}}
        for key, rule in _QUEUE_CHECKS.items():
            check(f"{qpath}[{key!r}]", qs[key], rule)
        cleanup = {**QUEUE_DEFAULTS["CLEANUP"], **(qs["CLEANUP"] if isinstance(qs["CLEANUP"], dict) else {})}
        for key in cleanup:
            if key not in CLEANUP_KEYS:
                errors.append(
                    (
                        f"{qpath}['CLEANUP'][{key!r}]",
                        f"is not a known cleanup setting{_close_match(str(key), dict.fromkeys(CLEANUP_KEYS))}",
                    )
                )
            else:
                check(f"{qpath}['CLEANUP'][{key!r}]", cleanup[key], _optional_seconds)
        if errors:
            continue
        queues[qname] = QueueSettings(
            name=qname,
            visibility_ms=qs["VISIBILITY_MS"],
            concurrent_jobs=qs["CONCURRENT_JOBS"],
            max_attempts=qs["MAX_ATTEMPTS"],
            history=qs["HISTORY"],
            failed_history=qs["FAILED_HISTORY"],
            completed_after_seconds=cleanup["COMPLETED_AFTER_SECONDS"],
            failed_after_seconds=cleanup["FAILED_AFTER_SECONDS"],
            retry_jobs_running_before_restart=qs["RETRY_JOBS_RUNNING_BEFORE_RESTART"],
            run_on_startup=qs["RUN_ON_STARTUP"],
            backoff_base_seconds=float(qs["BACKOFF_BASE_SECONDS"]),
            backoff_max_seconds=float(qs["BACKOFF_MAX_SECONDS"]),
            replicas=qs["REPLICAS"],
            replication_timeout_ms=qs["REPLICATION_TIMEOUT_MS"],
            prefetch=qs["PREFETCH"],
            expired_after_seconds=cleanup["EXPIRED_AFTER_SECONDS"],
            limits=FlowLimits(
                qs["GLOBAL_CONCURRENCY"] or 0, None if qs["RATE_LIMIT"] is None else parse_rate(qs["RATE_LIMIT"])
            ),
        )
    if errors:
        return None, errors
    return (
        Settings(
            redis_url=top["REDIS_URL"],
            cache_alias=top["CACHE_ALIAS"],
            key_prefix=top["KEY_PREFIX"],
            default_queue=default_queue,
            cluster=top["CLUSTER"],
            sentinels=tuple((h, p) for h, p in top["SENTINELS"]) if top["SENTINELS"] else None,
            sentinel_service=top["SENTINEL_SERVICE"],
            sentinel_options=dict(top["SENTINEL_OPTIONS"]),
            redis_options=dict(top["REDIS_OPTIONS"]),
            connect_timeout=float(top["CONNECT_TIMEOUT"]),
            socket_timeout=float(top["SOCKET_TIMEOUT"]),
            max_payload_bytes=top["MAX_PAYLOAD_BYTES"],
            shutdown_grace_seconds=float(top["SHUTDOWN_GRACE_SECONDS"]),
            heartbeat_seconds=float(top["HEARTBEAT_SECONDS"]),
            worker_timeout_seconds=float(top["WORKER_TIMEOUT_SECONDS"]),
            sweep_interval_seconds=float(top["SWEEP_INTERVAL_SECONDS"]),
            queues=queues,
            worker_events_listener=top["WORKER_EVENTS_LISTENER"],
            durable=top["DURABLE"],
            schedules=dict(top["SCHEDULES"]),
            metrics=metrics or MetricsSettings(),
        ),
        [],
    )


def raw_setting() -> Any:
    from django.conf import settings

    return getattr(settings, "JOBQUEUE", None)


@cache
def get_settings() -> Settings:
    """The validated JOBQUEUE setting; raises ConfigurationError naming the key."""
    result, errors = validate(raw_setting())
    if errors:
        raise ConfigurationError("; ".join(f"{path} {problem}" for path, problem in errors))
    assert result is not None
    return result


# The settings that every cache built from the settings depends on: each cache
# owner (this module, connection.py, api.py) clears its own when one changes.
SETTINGS_READ = ("JOBQUEUE", "CACHES")


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS_READ:
        get_settings.cache_clear()
