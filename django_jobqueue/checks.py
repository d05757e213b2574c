"""System checks for the JOBQUEUE setting (IDs listed in docs/settings.md)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import raw_setting, validate


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """django_jobqueue.E001: a JOBQUEUE value is wrong; one error per problem."""
    _settings, errors = validate(raw_setting())
    return [
        Error(
            f"{path} {problem}",
            hint="See docs/settings.md for every JOBQUEUE key, its type and its default.",
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


@register(Tags.compatibility, deploy=True)
def check_durability(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """django_jobqueue.W001 (with --deploy): DURABLE is on but Redis keeps nothing
    (or too little) on disk. Asks Redis; skipped when it cannot be reached."""
    from redis.exceptions import RedisError

    from .conf import get_settings
    from .connection import get_client
    from .durability import persistence_problem
    from .exceptions import JobQueueError

    try:
        settings = get_settings()
        if not settings.durable:
            return []
        problem = persistence_problem(get_client())
    except (JobQueueError, RedisError) as exc:
        return [Warning(f"JOBQUEUE['DURABLE'] is on, but Redis could not be asked: {exc}", id="django_jobqueue.W002")]
    if not problem:
        return []
    return [
        Warning(
            f"JOBQUEUE['DURABLE'] is on, but {problem}.",
            hint="Run Redis with `appendonly yes` and `appendfsync everysec` (or `always`); see docs/delivery.md.",
            id="django_jobqueue.W001",
        )
    ]
