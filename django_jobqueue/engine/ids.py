"""Job IDs and claim tokens.

A job ID the queue makes is 36 lowercase hex characters: 12 for the creation
time in milliseconds (so IDs sort by creation time, as strings and as numbers)
and 24 for 96 random bits from ``secrets`` (so IDs from any number of processes
never collide). Claim tokens are 128 random bits.

A caller may choose a job's ID instead (``enqueue(job_id=...)``): it must follow
JOB_ID_RULE, checked before anything is written. The rule keeps an ID usable in
a key name, in an admin URL (no ``/``; not ``.`` or ``..``, which browsers
resolve away) and on a command line (no leading ``-``).
"""

from __future__ import annotations

import re
import secrets
import time

from .exceptions import InvalidJobOptions
from .keys import MAX_NAME_LENGTH

JOB_ID_RE = re.compile(r"^[0-9a-f]{36}$")
ALLOWED_JOB_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
JOB_ID_RULE = f"1 to {MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9, '.', '_' and '-', the first a letter or a digit"


def new_job_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms:012x}{secrets.token_hex(12)}"


def new_claim_token() -> str:
    return secrets.token_hex(16)


def is_job_id(value: object) -> bool:
    """True for an ID in the form new_job_id() makes."""
    return isinstance(value, str) and bool(JOB_ID_RE.match(value))


def is_allowed_job_id(value: object) -> bool:
    """True for an ID a caller may give a job (JOB_ID_RULE); every ID
    new_job_id() makes is one."""
    return isinstance(value, str) and ALLOWED_JOB_ID_RE.fullmatch(value) is not None


def check_job_id(value: object) -> str:
    """Return ``value`` if it follows JOB_ID_RULE, else raise InvalidJobOptions
    (a ValueError) saying so."""
    if not is_allowed_job_id(value):
        raise InvalidJobOptions(f"job_id {_shown(value)} is not a valid job ID: use {JOB_ID_RULE}")
    return str(value)


def _shown(value: object) -> str:
    """The offending value for an error message, short whatever it is."""
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    return f"of type {type(value).__name__}"


def job_id_time_ms(job_id: str) -> int:
    """The creation time (ms since the epoch) encoded in a job ID."""
    return int(job_id[:12], 16)
