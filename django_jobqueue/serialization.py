"""JSON in and out of Redis. Never pickle.

Payloads and results are encoded with Django's JSON encoder (datetimes,
dates, times, timedeltas, decimals, UUIDs and lazy strings), compactly, with
NaN and Infinity refused (they are not JSON), and with a size limit checked on
the UTF-8 bytes that would be stored.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import CorruptJobError, PayloadError

_encoder = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, *, what: str = "payload", max_bytes: int | None = None) -> str:
    """Encode ``value`` as compact JSON text, or raise PayloadError saying why."""
    if value is None:
        return "null"  # most results: skip the encoder
    try:
        text = _encoder.encode(value)
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-encodable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{what} contains text that is not valid Unicode: {exc.reason}") from None
    if max_bytes is not None and size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes as JSON, over the limit of {max_bytes} bytes")
    return text


def loads(text: str | bytes | None, *, what: str = "payload") -> Any:
    """Decode JSON text read from Redis, or raise CorruptJobError."""
    if text is None:
        raise CorruptJobError(f"{what} is missing")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptJobError(f"{what} is not valid JSON: {exc}") from None
