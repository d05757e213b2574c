"""The process-wide Redis client, built from the JOBQUEUE setting.

One client (and so one connection pool) per process, made on first use and
dropped when the settings change. redis-py pools are thread-safe and notice a
fork, so workers with threads and forked processes can share this.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import SETTINGS_READ, Settings, get_settings
from .engine.redact import url_location

logger = logging.getLogger("django_jobqueue")
_lock = threading.Lock()
_client: Any = None


def build_client(settings: Settings, *, for_asyncio: bool = False) -> Any:
    """A new redis-py client for these settings (no connection is opened yet,
    except to a cluster's nodes, which redis-py asks for the slot table);
    ``for_asyncio``: its redis.asyncio twin (async_connection.py)."""
    if settings.cache_alias:
        from django_redis import get_redis_connection

        client = get_redis_connection(settings.cache_alias)
        return _asyncio_beside(client) if for_asyncio else client
    options = client_options(settings)
    if settings.sentinels:
        if for_asyncio:
            from redis.asyncio.sentinel import Sentinel as AsyncSentinel

            sentinel_class: Any = AsyncSentinel
        else:
            from redis.sentinel import Sentinel

            sentinel_class = Sentinel
        assert settings.sentinel_service  # validate() requires it with SENTINELS
        sentinel = sentinel_class(list(settings.sentinels), sentinel_kwargs=sentinel_connection_options(settings))
        return sentinel.master_for(settings.sentinel_service, **options)
    if settings.cluster:
        if for_asyncio:
            from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

            return AsyncRedisCluster.from_url(settings.redis_url, **options)
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_url, **options)
    if for_asyncio:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(settings.redis_url, **options)
    import redis

    return redis.Redis.from_url(settings.redis_url, **options)


def _asyncio_beside(client: Any) -> Any:
    """django-redis has no asyncio client: one to the same server, with the
    connection settings of the cache client's pool (host, port or socket, db,
    credentials, TLS, timeouts)."""
    import redis.asyncio
    import redis.connection

    pool = client.connection_pool
    kinds: dict[type, type] = {
        redis.connection.SSLConnection: redis.asyncio.SSLConnection,
        redis.connection.UnixDomainSocketConnection: redis.asyncio.UnixDomainSocketConnection,
    }
    connection_class = kinds.get(pool.connection_class, redis.asyncio.Connection)
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(connection_class=connection_class, **pool.connection_kwargs)
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of the client for the queue's Redis: with
    ``REDIS_URL`` for one Redis and a cluster, alone for a Sentinel-managed
    primary. ``REDIS_OPTIONS`` win over ours (and, for the primary, over the URL)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "health_check_interval": 30,
        "decode_responses": True,
        # Bytes that are not UTF-8 (written by hand, or a pickle) must not raise
        # in the middle of a claim: they decode with U+FFFD, the payload then
        # fails JSON decoding, and the job is dead-lettered at once.
        "encoding_errors": "replace",
    }
    if settings.sentinels:
        # The sentinels name the primary; REDIS_URL may still give its user,
        # password, db and TLS (host and port are ignored).
        options = {**options, **_url_credentials(settings.redis_url), **settings.redis_options}
        return with_hostname_check(options, tls=bool(options.get("ssl")))
    options.update(settings.redis_options)
    if settings.cluster:
        options.pop("health_check_interval", None)
    # Arguments in the URL's query (?ssl_cert_reqs=none) win over keyword arguments in redis-py.
    chosen = {**options, **_url_query_options(settings.redis_url)}
    tls = urlsplit(settings.redis_url).scheme == "rediss" or bool(options.get("ssl"))
    return {**options, **_hostname_check(chosen, tls=tls)}


def sentinel_connection_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of the connections to the sentinels themselves."""
    options = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        **settings.sentinel_options,  # the sentinels' own password, TLS, ...
    }
    return with_hostname_check(options, tls=bool(options.get("ssl")))


# ssl_cert_reqs values that turn certificate verification off (redis-py reads None as "none").
_NO_VERIFICATION = (None, "none", ssl.CERT_NONE)


def _hostname_check(options: dict[str, Any], *, tls: bool) -> dict[str, Any]:
    """``{"ssl_check_hostname": True}`` when a TLS connection with these options
    would verify the certificate but nobody chose whether to check its host name."""
    if not tls or "ssl_check_hostname" in options:
        return {}
    if "ssl_cert_reqs" in options and options["ssl_cert_reqs"] in _NO_VERIFICATION:
        # No certificate check, so no name to check: Python refuses the pair.
        return {}
    return {"ssl_check_hostname": True}


def with_hostname_check(options: dict[str, Any], *, tls: bool) -> dict[str, Any]:
    """``options``, plus ``ssl_check_hostname=True`` for a TLS connection.

    redis-py before 6.0 compares the server's host name with its certificate
    only when told to: otherwise any certificate the trusted CA issued, to any
    host, is accepted. The check is asked for explicitly, so no redis-py default
    decides (pyproject.toml also requires 6.1, whose Cluster client is the first
    to pass the option on: 5.x and 6.0 drop it). An explicit choice in the
    options wins: ``ssl_check_hostname`` itself, or ``ssl_cert_reqs`` "none"
    (no verification at all).
    """
    return {**options, **_hostname_check(options, tls=tls)}


def _parse_url(url: str) -> dict[str, Any]:
    """redis-py's own reading of a URL: the options its clients would take from it."""
    from redis.connection import parse_url

    # redis-py leaves parse_url unannotated.
    parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return parsed


def _url_query_options(url: str) -> dict[str, Any]:
    """The TLS choices made in a URL's query string (``?ssl_check_hostname=false``)."""
    try:
        parsed = _parse_url(url)
    except ValueError:
        return {}  # the client reports the bad URL itself
    return {k: parsed[k] for k in ("ssl_check_hostname", "ssl_cert_reqs") if k in parsed}


def _url_credentials(url: str) -> dict[str, Any]:
    """User, password, db and TLS of a redis:// or rediss:// URL, for a
    Sentinel-managed primary."""
    parsed = _parse_url(url)
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


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS_READ:
        reset()


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
    settings = settings or get_settings()
    if settings.cache_alias:
        return f"cache alias {settings.cache_alias!r}"
    if settings.sentinels:
        hosts = ", ".join(f"{h}:{p}" for h, p in settings.sentinels)
        return f"sentinel service {settings.sentinel_service!r} via {hosts}"
    return url_location(settings.redis_url) + (" (cluster)" if settings.cluster else "")
