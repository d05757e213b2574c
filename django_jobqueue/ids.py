"""Job IDs and claim tokens.

A job ID is 36 lowercase hex characters: 12 for the creation time in
milliseconds (so IDs sort by creation time, as strings and as numbers) and 24
for 96 random bits from ``secrets`` (so IDs from any number of processes never
collide). Claim tokens are 128 random bits.
"""

from __future__ import annotations

import re
import secrets
import time

JOB_ID_RE = re.compile(r"^[0-9a-f]{36}$")


def new_job_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms:012x}{secrets.token_hex(12)}"


def new_claim_token() -> str:
    return secrets.token_hex(16)


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and bool(JOB_ID_RE.match(value))


def job_id_time_ms(job_id: str) -> int:
    """The creation time (ms since the epoch) encoded in a job ID."""
    return int(job_id[:12], 16)
