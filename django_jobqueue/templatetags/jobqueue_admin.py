"""Filters for the admin templates. None returns HTML: what they return is
autoescaped like any other value."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import template

register = template.Library()

# Payloads can be up to MAX_PAYLOAD_BYTES (1 MiB by default); a page shows this much.
PRETTY_LIMIT = 100_000


@register.filter
def ms_to_datetime(value: Any) -> dt.datetime | None:
    """Milliseconds since the epoch (a job hash field) -> an aware datetime,
    shown in the current time zone by the ``date`` filter."""
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@register.filter
def duration_ms(value: Any) -> str:
    """A length of time in ms, the way a person says it: 850 ms, 4.2 s, 3 min, 5 h."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


@register.filter
def pretty_json(value: Any) -> str:
    """Stored JSON text, indented for reading; text that is not JSON as it is."""
    if value is None:
        return ""
    text = str(value)
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        pass
    if len(text) > PRETTY_LIMIT:
        return f"{text[:PRETTY_LIMIT]}\n… ({len(text) - PRETTY_LIMIT} more characters not shown)"
    return text


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """mapping[key] in a template (None when absent)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
