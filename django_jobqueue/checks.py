"""System checks for the JOBQUEUE setting (IDs listed in docs/settings.md)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import raw_setting, validate
from .engine.redact import mask_credentials


def docs(page: str, section: str = "") -> str:
    """Where a hint sends the reader: a page (and section) of the documentation, by title.
    No repository path: an installed package has no docs/ folder beside it, and the
    project declares no published address (pyproject.toml's [project.urls])."""
    where = f'page "{page}", section "{section}"' if section else f'page "{page}"'
    return f"the django-jobqueue documentation, {where}"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """django_jobqueue.E001: a JOBQUEUE value is wrong; one error per problem.
    Values are quoted with their passwords masked (validate() does it; masked
    again here because these messages reach terminals, CI logs and e-mails)."""
    _settings, errors = validate(raw_setting())
    return [
        Error(
            mask_credentials(f"{path} {problem}"),
            hint=f"See {docs('Settings')} for every JOBQUEUE key, its type and its default.",
            id="django_jobqueue.E001",
        )
        for path, problem in errors
    ]


@register(Tags.compatibility)
def check_cache_alias(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """django_jobqueue.E002: CACHE_ALIAS names no django-redis cache."""
    from django.conf import settings

    raw = raw_setting()
    alias = raw.get("CACHE_ALIAS") if isinstance(raw, dict) else None
    if not alias or not isinstance(alias, str):
        return []
    cache = getattr(settings, "CACHES", {}).get(alias)
    if cache is None:
        return [Error(f"JOBQUEUE['CACHE_ALIAS'] names {alias!r}, which is not in CACHES", id="django_jobqueue.E002")]
    if not str(cache.get("BACKEND", "")).startswith("django_redis."):
        return [
            Error(
                f"JOBQUEUE['CACHE_ALIAS'] names {alias!r}, whose BACKEND is not django-redis",
                hint="Use a django_redis.cache.RedisCache backend, or set REDIS_URL instead.",
                id="django_jobqueue.E002",
            )
        ]
    return []


@register(Tags.compatibility)
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """django_jobqueue.E003: a periodic job's schedule is wrong (a bad cron
    expression, an unknown time zone, job or queue, an interval under a
    second...); the message names the schedule. Reads the settings and the
    job registry only."""
    from .exceptions import ConfigurationError
    from .schedules import all_schedules

    settings, _errors = validate(raw_setting())
    if settings is None:
        return []  # E001 says why
    try:
        all_schedules(settings)
    except ConfigurationError as exc:
        return [
            Error(
                mask_credentials(str(exc)),
                hint=f"See {docs('Periodic jobs')} for the options of a schedule.",
                id="django_jobqueue.E003",
            )
        ]
    return []


@register(Tags.compatibility, deploy=True)
def check_durability(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """django_jobqueue.W001 (with --deploy): DURABLE is on but Redis keeps nothing
    (or too little) on disk. Asks Redis; skipped when it cannot be reached."""
    from redis.exceptions import RedisError

    from .conf import get_settings
    from .connection import get_client
    from .engine.durability import persistence_problem
    from .exceptions import JobQueueError

    try:
        settings = get_settings()
        if not settings.durable:
            return []
        problem = persistence_problem(get_client())
    except (JobQueueError, RedisError) as exc:
        reason = mask_credentials(str(exc))
        return [
            Warning(f"JOBQUEUE['DURABLE'] is on, but Redis could not be asked: {reason}", id="django_jobqueue.W002")
        ]
    if not problem:
        return []
    return [
        Warning(
            f"JOBQUEUE['DURABLE'] is on, but {problem}.",
            hint="Run Redis with `appendonly yes` and `appendfsync everysec` (or `always`); see "
            f"{docs('Delivery guarantees and controls', 'Persistence')}.",
            id="django_jobqueue.W001",
        )
    ]


# setting -> (its QueueSettings field, the jobs it keeps, their CLEANUP key and field)
_BOUNDS = {
    "HISTORY": ("history", "completed", "COMPLETED_AFTER_SECONDS", "completed_after_seconds"),
    "FAILED_HISTORY": ("failed_history", "dead-lettered", "FAILED_AFTER_SECONDS", "failed_after_seconds"),
}


@register(Tags.compatibility)
def check_retention_bounds(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """django_jobqueue.W003: a queue keeps finished jobs with no count bound
    (HISTORY or FAILED_HISTORY None). Reads the setting only."""
    settings, _errors = validate(raw_setting())
    if settings is None:
        return []  # E001 says why
    out = []
    for qs in settings.queues.values():
        for key, (bound, what, cleanup, lifetime) in _BOUNDS.items():
            if getattr(qs, bound) is not None:
                continue
            seconds = getattr(qs, lifetime)
            growth = (
                "and CLEANUP sets no lifetime either: they are kept until purged"
                if seconds is None
                else f"for CLEANUP's {cleanup} ({seconds} s) each: Redis memory grows with the rate "
                f"(jobs per second x {seconds} s x bytes per job)"
            )
            out.append(
                Warning(
                    f"JOBQUEUE['QUEUES'][{qs.name!r}][{key!r}] is None: {what} jobs are kept with no count "
                    f"bound, {growth}.",
                    hint=f"Set a count ({docs('Settings', 'Retention')}), or silence django_jobqueue.W003 "
                    "with SILENCED_SYSTEM_CHECKS when that is what you want.",
                    id="django_jobqueue.W003",
                )
            )
    return out


@register(Tags.compatibility, deploy=True)
def check_retention_memory(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """django_jobqueue.W004 (with --deploy): the finished jobs the queues may
    keep (their count bounds x the bytes a job holds, measured on the jobs kept
    now) exceed half of Redis maxmemory. Asks Redis; says nothing when it
    cannot be reached."""
    from redis.exceptions import RedisError

    from .api import get_queue
    from .conf import get_settings
    from .connection import get_client
    from .engine import browse
    from .exceptions import JobQueueError

    try:
        settings = get_settings()
        limit = browse.maxmemory(get_client())
        if not limit:
            return []
        retained = {name: browse.retained_memory(get_queue(name)) for name in settings.queues}
    except (JobQueueError, RedisError):
        return []  # E001 reports bad settings; an unreachable Redis is no reason to fail a check
    problem = browse.retention_problem(retained, limit)
    if not problem:
        return []
    return [
        Warning(
            f"JOBQUEUE: {problem}.",
            hint="Lower HISTORY / FAILED_HISTORY of the busiest queues, or raise maxmemory "
            f"({docs('Settings', 'Retention')}).",
            id="django_jobqueue.W004",
        )
    ]
