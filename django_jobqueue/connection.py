"""The process-wide Redis client, built from the JOBQUEUE setting.

One client (and so one connection pool) per process, made on first use and
dropped when the settings change. redis-py pools are thread-safe and notice a
fork, so workers with threads and forked processes can share this.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .conf import Settings, get_settings

logger = logging.getLogger("django_jobqueue")
_lock = threading.Lock()
_client: Any = None


def build_client(settings: Settings) -> Any:
    """A new redis-py client for these settings (no connection is opened yet)."""
    if settings.cache_alias:
        from django_redis import get_redis_connection

        return get_redis_connection(settings.cache_alias)
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "health_check_interval": 30,
        "decode_responses": True,
        # Bytes that are not UTF-8 (written by hand, or a pickle) must not raise
        # in the middle of a claim: they decode with U+FFFD, the payload then
        # fails JSON decoding, and the job is dead-lettered at once.
        "encoding_errors": "replace",
        **settings.redis_options,
    }
    if settings.sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": settings.connect_timeout,
                "socket_timeout": settings.socket_timeout,
                **settings.sentinel_options,  # the sentinels' own password, TLS, ...
            },
        )
        # The sentinels name the primary; REDIS_URL may still give its user,
        # password, db and TLS (host and port are ignored); REDIS_OPTIONS win.
        return sentinel.master_for(settings.sentinel_service, **{**_url_credentials(settings.redis_url), **options})
    if settings.cluster:
        from redis.cluster import RedisCluster

        options.pop("health_check_interval", None)
        return RedisCluster.from_url(settings.redis_url, **options)
    import redis

    return redis.Redis.from_url(settings.redis_url, **options)


def _url_credentials(url: str) -> dict[str, Any]:
    """User, password, db and TLS of a redis:// or rediss:// URL, for a
    Sentinel-managed primary."""
    from urllib.parse import urlsplit

    from redis.connection import parse_url

    parsed = parse_url(url)
    out = {k: parsed[k] for k in ("username", "password", "db") if parsed.get(k) not in (None, "")}
    if urlsplit(url).scheme == "rediss":
        out["ssl"] = True
    return out


def get_client() -> Any:
    """The shared client of this process."""
    global _client
    client = _client
    if client is None:
        with _lock:
            if _client is None:
                _client = build_client(get_settings())
            client = _client
    return client


def reset() -> None:
    """Forget the shared client (settings changed, or tests)."""
    global _client
    with _lock:
        old, _client = _client, None
    if old is not None and hasattr(old, "close"):
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead pool must not raise
            logger.debug("closing the old Redis client failed: %s", exc)


def describe(settings: Settings | None = None) -> str:
    """Where the queue's Redis is, for logs: never with a password."""
    from urllib.parse import urlsplit

    settings = settings or get_settings()
    if settings.cache_alias:
        return f"cache alias {settings.cache_alias!r}"
    if settings.sentinels:
        hosts = ", ".join(f"{h}:{p}" for h, p in settings.sentinels)
        return f"sentinel service {settings.sentinel_service!r} via {hosts}"
    parts = urlsplit(settings.redis_url)
    host = parts.hostname or parts.path
    port = f":{parts.port}" if parts.port else ""
    db = parts.path if parts.scheme != "unix" else ""
    return f"{parts.scheme}://{host}{port}{db}" + (" (cluster)" if settings.cluster else "")
