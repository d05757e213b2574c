"""JOBQUEUE["METRICS"]: who may read the metrics view (django_jobqueue.metrics.view).

Checked by conf.validate() with the rest of the setting, so a mistake here is a
ConfigurationError (and the system check E001) naming the key, like any other.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .engine.redact import shown

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The checks AUTH may name. "none" (alone) turns every check off.
CHECKS = ("staff", "token", "ips")
DEFAULTS: dict[str, Any] = {"AUTH": "staff", "TOKEN": None, "ALLOWED_IPS": []}
# Shorter tokens are guessable: a scrape is one cheap request, tried as often as one likes.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class MetricsSettings:
    # The checks a request must pass, every one of them; () lets everybody in ("none").
    auth: tuple[str, ...] = ("staff",)
    # Out of the repr (a debug page's local variables): it is a password.
    token: str | None = field(default=None, repr=False)
    allowed_ips: tuple[IPNetwork, ...] = ()


def _auth(value: Any) -> tuple[tuple[str, ...] | None, str | None]:
    """AUTH as a tuple of checks, or the problem with it."""
    want = '"staff", "token", "ips", "none", or a list of several of "staff", "token" and "ips" (all must pass)'
    if value == "none":
        return (), None
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, str) and v in CHECKS for v in value)
        or len(set(value)) != len(value)
    ):
        return None, f"must be {want}, got {shown(value)}"
    return tuple(value), None


def _good_token(token: Any) -> bool:
    # It travels in an HTTP header (Authorization: Bearer <token>), whose bytes Django reads as Latin-1.
    return (
        isinstance(token, str)
        and len(token) >= MIN_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


def _networks(value: Any) -> tuple[tuple[IPNetwork, ...] | None, str | None]:
    """ALLOWED_IPS as networks (an address is a network of one), or the problem with it."""
    if not isinstance(value, (list, tuple)):
        return None, f"must be a list of IP addresses or networks (CIDR), got {shown(value)}"
    networks = []
    for entry in value:
        try:
            if not isinstance(entry, str):
                raise ValueError
            # strict=False: "10.1.2.3/8" means the network around it, as an operator means it.
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            return None, f"holds {shown(entry)}, which is not an IP address or network such as '10.0.0.0/8'"
    return tuple(networks), None


def _near(key: Any) -> str:
    near = difflib.get_close_matches(str(key), list(DEFAULTS), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def validate_metrics(raw: Any) -> tuple[MetricsSettings | None, list[tuple[str, str]]]:
    """Check JOBQUEUE["METRICS"]: (settings or None, [(key path, problem)])."""
    base = "JOBQUEUE['METRICS']"
    if not isinstance(raw, Mapping):
        return None, [(base, f"must be a dict, got {type(raw).__name__}")]
    errors = [(f"{base}[{key!r}]", f"is not a known metrics setting{_near(key)}") for key in raw if key not in DEFAULTS]
    values = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    auth, problem = _auth(values["AUTH"])
    if problem:
        errors.append((f"{base}['AUTH']", problem))
    token = values["TOKEN"]
    if token is not None and not _good_token(token):
        # Never quoted: it is a password.
        errors.append(
            (
                f"{base}['TOKEN']",
                f"must be None or at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces",
            )
        )
        token = None
    elif auth and "token" in auth and token is None:
        errors.append((f"{base}['TOKEN']", 'must be set when AUTH includes "token"'))
    networks, problem = _networks(values["ALLOWED_IPS"])
    if problem:
        errors.append((f"{base}['ALLOWED_IPS']", problem))
    elif auth and "ips" in auth and not networks:
        errors.append((f"{base}['ALLOWED_IPS']", 'must list at least one address or network when AUTH includes "ips"'))
    if errors or auth is None or networks is None:
        return None, errors
    return MetricsSettings(auth=auth, token=token, allowed_ips=networks), []
