"""JSON in and out of Redis. Never pickle.

Payloads and results are encoded compactly, with NaN and Infinity refused
(they are not JSON), and with a size limit checked on the UTF-8 bytes that
would be stored. The encoder is the caller's (``make_encoder``): the engine's
own is the standard library's; the Django face uses Django's
(``django_jobqueue/django_json.py``: datetimes, decimals, UUIDs...).
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import CorruptJobError, PayloadError


def make_encoder(kind: type[json.JSONEncoder] = json.JSONEncoder) -> json.JSONEncoder:
    """An encoder of ``kind`` that writes JSON as the engine stores it."""
    return kind(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


PLAIN = make_encoder()


def dumps(value: Any, *, encoder: json.JSONEncoder = PLAIN, what: str = "payload", max_bytes: int | None = None) -> str:
    """Encode ``value`` as compact JSON text, or raise PayloadError saying why."""
    if value is None:
        return "null"  # most results: skip the encoder
    try:
        text = encoder.encode(value)
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
