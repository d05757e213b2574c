"""Payloads and results as the Django face stores them: Django's JSON encoder.

It writes datetimes, dates, times, timedeltas, decimals, UUIDs and lazy
strings; the engine's rules (compact, NaN refused, the size cap) still apply.
"""

from __future__ import annotations

from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .engine import serialization

ENCODER = serialization.make_encoder(DjangoJSONEncoder)


def dumps(value: Any, *, what: str = "payload", max_bytes: int | None = None) -> str:
    """Encode ``value`` as Django would, or raise PayloadError saying why."""
    return serialization.dumps(value, encoder=ENCODER, what=what, max_bytes=max_bytes)
