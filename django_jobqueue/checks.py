"""System checks for the JOBQUEUE setting (IDs listed in docs/settings.md)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register

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
