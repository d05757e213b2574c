"""Prometheus metrics: ``django_jobqueue.metrics.view`` to put in urls.py, and the
registry that it and ``manage.py jobq_metrics`` serve (docs/observability.md).

Who may read the view is JOBQUEUE["METRICS"]["AUTH"] (metrics_settings.py): a
staff session (the default), a bearer token, a list of client addresses, or
several of them, all of which must pass. prometheus-client is an optional
extra: it is imported when a registry is built, never when this module is.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from redis.exceptions import RedisError

from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .engine.keys import GlobalKeys
from .engine.redact import mask_credentials
from .exceptions import ConfigurationError, JobQueueError
from .metrics_settings import MetricsSettings
from .metrics_snapshot import Reading, read

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

MISSING = (
    "the Prometheus metrics need prometheus-client, which is not installed: pip install 'django-jobqueue[prometheus]'"
)
TEXT = "text/plain; charset=utf-8"


def read_all() -> Reading:
    """Every configured queue and the live workers, in a bounded number of Redis calls."""
    settings = get_settings()
    queues = {name: get_queue(name).keys for name in settings.queues}
    global_keys = GlobalKeys(settings.key_prefix, settings.cluster)
    return read(get_client(), queues, global_keys, settings.worker_timeout_seconds)


def build_registry(*, report_errors: bool) -> CollectorRegistry:
    """A private registry whose one collector reads Redis at each scrape.
    Raises ConfigurationError when prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(MISSING) from exc
    from . import metrics_collector

    return metrics_collector.build(read_all, report_errors=report_errors)


@never_cache
@require_safe
def view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus's text format; 401 or 403 to a request that
    JOBQUEUE["METRICS"] does not let in, 503 while Redis cannot be read."""
    refusal = access_refusal(request, get_settings().metrics)
    if refusal is not None:
        return refusal
    registry = build_registry(report_errors=False)
    from prometheus_client.exposition import choose_encoder

    # The format the scraper asks for (Prometheus's text or OpenMetrics), as prometheus-client's server does.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encoder(registry)
    except (RedisError, JobQueueError, OSError) as exc:
        line = f"jobq metrics: Redis could not be read: {mask_credentials(str(exc))}\n"
        return HttpResponse(line, status=503, content_type=TEXT)
    return HttpResponse(body, content_type=content_type)


def access_refusal(request: HttpRequest, settings: MetricsSettings) -> HttpResponse | None:
    """The answer to a request that may not read the metrics, else None.
    Every check AUTH names must pass: the address first, then the token, then the session."""
    if "ips" in settings.auth and not _address_allowed(request.META.get("REMOTE_ADDR", ""), settings):
        return HttpResponse("jobq metrics: this address may not read the metrics\n", status=403, content_type=TEXT)
    if "token" in settings.auth and not _token_matches(request, settings):
        response = HttpResponse("jobq metrics: a valid bearer token is required\n", status=401, content_type=TEXT)
        response["WWW-Authenticate"] = 'Bearer realm="jobq metrics"'
        return response
    if "staff" in settings.auth:
        user = getattr(request, "user", None)
        if not (getattr(user, "is_active", False) and getattr(user, "is_staff", False)):
            return HttpResponse("jobq metrics: a staff session is required\n", status=403, content_type=TEXT)
    return None


def _address_allowed(remote_addr: str, settings: MetricsSettings) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr.strip())
    except ValueError:
        return False
    # An IPv4 client of a dual-stack server arrives as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.allowed_ips)


def _token_matches(request: HttpRequest, settings: MetricsSettings) -> bool:
    scheme, _space, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or settings.token is None:
        return False
    # Compared in constant time, as bytes: compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.strip().encode(), settings.token.encode())
