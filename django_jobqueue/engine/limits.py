"""Flow limits across the fleet: a queue's global concurrency and rate limit.

The claim scripts enforce them (lua/_limits.lua says how); this module holds
their Python side: reading a rate like ``"10/s"``, the limits a queue's
settings give, the run-time overrides kept in Redis (``limits`` hash, changed
with :func:`set_limits`, each change recorded in ``limits_log``), and what is
in use now, for the admin and ``jobq_queues``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import scripts
from .keys import QueueKeys
from .replies import _s

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|m|h|sec|second|min|minute|hour)\s*", re.IGNORECASE)
_UNIT_MS = {"s": 1000, "sec": 1000, "second": 1000, "m": 60_000, "min": 60_000, "minute": 60_000}
_UNIT_MS |= {"h": 3_600_000, "hour": 3_600_000}
# Changes kept in the limits log.
LOG_LENGTH = 100
# Bounds of a rate: its window sits in a sorted set of one entry per job.
MAX_RATE_COUNT = 1_000_000
MAX_RATE_WINDOW_MS = 24 * 3_600_000


@dataclass(frozen=True)
class Rate:
    """At most ``count`` jobs handed out in any window of ``window_ms``."""

    count: int
    window_ms: int

    def __str__(self) -> str:
        for unit, ms in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if self.window_ms % ms == 0:
                n = self.window_ms // ms
                return f"{self.count}/{'' if n == 1 else n}{unit}"
        return f"{self.count}/{self.window_ms}ms"


def parse_rate(text: object) -> Rate:
    """``"10/s"``, ``"100/m"``, ``"1000/h"``, or a window of several units
    (``"5/10s"``): a :class:`Rate`, or ValueError saying what is accepted."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a rate limit is a string like '10/s', '100/m', '1000/h' or '5/10s', got {text!r}")
    count, times, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    if count < 1 or times < 1:
        raise ValueError(f"a rate limit lets at least one job through in a window of at least one unit, got {text!r}")
    window_ms = times * _UNIT_MS[unit]
    if count > MAX_RATE_COUNT or window_ms > MAX_RATE_WINDOW_MS:
        raise ValueError(f"a rate limit allows at most {MAX_RATE_COUNT} jobs in a window of at most 24h, got {text!r}")
    return Rate(count, window_ms)


@dataclass(frozen=True)
class FlowLimits:
    """A queue's limits: global concurrency (0: none) and rate (None: none)."""

    global_concurrency: int = 0
    rate: Rate | None = None

    def argv(self) -> dict[str, Any]:
        """The claim scripts' arguments for these limits (settings' values:
        an override in Redis wins over them, see lua/_limits.lua)."""
        return {
            "global_concurrency": self.global_concurrency,
            "rate_count": self.rate.count if self.rate else 0,
            "rate_window_ms": self.rate.window_ms if self.rate else 0,
        }


@dataclass(frozen=True)
class LimitsState:
    """What the admin and ``jobq_queues`` show for a queue."""

    configured: FlowLimits  # from the settings
    effective: FlowLimits  # what the claims hold to now
    overridden: frozenset[str]  # "global_concurrency" and/or "rate_limit": set at run time
    slots_in_use: int  # jobs claimed now, fleet-wide
    rate_used: int  # jobs handed out within the rate's current window
    changes: tuple[dict[str, Any], ...]  # the latest changes, newest first
    keys_waiting: int = 0  # concurrency keys with jobs waiting for a slot (lua/_jobs.lua)


def _overrides(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def effective(configured: FlowLimits, overrides: Mapping[str, str]) -> tuple[FlowLimits, frozenset[str]]:
    """The limits in force, as lua/_limits.lua computes them, and which of
    them an override sets. A malformed override reads as no limit, as the
    script reads it."""
    cap, rate, which = configured.global_concurrency, configured.rate, set()
    if "global_concurrency" in overrides:
        which.add("global_concurrency")
        cap = _int(overrides["global_concurrency"])
    if "rate_count" in overrides:
        which.add("rate_limit")
        count, window = _int(overrides["rate_count"]), _int(overrides.get("rate_window_ms", ""))
        rate = Rate(count, window) if count > 0 and window > 0 else None
    return FlowLimits(max(cap, 0), rate), frozenset(which)


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def read_state(client: Any, keys: QueueKeys, configured: FlowLimits, *, log: int = 10) -> LimitsState:
    """The queue's limits and their use now (one round trip)."""
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.limits)
    pipe.zcard(keys.leases)
    pipe.llen(keys.claiming)
    pipe.zrange(keys.rate_log, 0, -1, withscores=True)
    pipe.lrange(keys.limits_log, 0, max(log, 1) - 1)
    pipe.zcard(keys.waiting_keys)
    raw, leases, claiming, window, changes, keys_waiting = pipe.execute()
    limits, overridden = effective(configured, _overrides(raw))
    rate_used = 0
    if limits.rate is not None:
        # Server time would be exact; the admin's clock is close enough for a count shown.
        rate_used = sum(1 for _member, score in window if score > now_ms - limits.rate.window_ms)
    records = []
    for entry in changes[:log]:
        try:
            record = json.loads(entry)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return LimitsState(
        configured, limits, overridden, int(leases) + int(claiming), rate_used, tuple(records), int(keys_waiting)
    )


_UNSET = object()


def set_limits(
    client: Any,
    keys: QueueKeys,
    *,
    who: str,
    global_concurrency: int | None | object = _UNSET,
    rate: Rate | None | object = _UNSET,
    reset: bool = False,
) -> dict[str, Any]:
    """Override the queue's limits at run time, until reset: ``global_concurrency``
    (0 or None: no limit, whatever the settings say), ``rate`` (None: no
    limit), or ``reset=True`` to go back to the settings' values for both.
    Only the arguments given change. Writes the override and a record of
    the change (``who``, the overrides ``before`` and ``after``) in one
    script; returns that record. Workers see a change at their next claim."""
    fields: dict[str, str] = {}
    cleared: list[str] = []
    if reset:
        cleared = ["global_concurrency", "rate_count", "rate_window_ms"]
    if global_concurrency is not _UNSET:
        if global_concurrency is not None and (
            not isinstance(global_concurrency, int) or isinstance(global_concurrency, bool) or global_concurrency < 0
        ):
            raise ValueError(
                f"global concurrency must be a whole number >= 0 (0: no limit), got {global_concurrency!r}"
            )
        fields["global_concurrency"] = str(global_concurrency or 0)
    if rate is not _UNSET:
        if rate is not None and not (
            isinstance(rate, Rate) and 1 <= rate.count <= MAX_RATE_COUNT and 1 <= rate.window_ms <= MAX_RATE_WINDOW_MS
        ):
            raise ValueError(f"rate must be a Rate (see parse_rate) within its bounds, or None, got {rate!r}")
        fields["rate_count"] = str(rate.count if rate else 0)
        fields["rate_window_ms"] = str(rate.window_ms if rate else 0)
    if not fields and not cleared:
        raise ValueError("nothing to change: give a global concurrency, a rate, or reset")
    record = {"ts_ms": int(time.time() * 1000), "who": who, "set": fields, "reset": bool(reset)}
    script = scripts.get("limits")
    flat: list[str] = []
    for name, value in fields.items():
        flat += (name, value)
    stored = script(
        client,
        script.keys_for(keys),
        script.argv_for(record=json.dumps(record), log_length=LOG_LENGTH, clear=" ".join(cleared), fields=flat),
    )
    return dict(json.loads(stored))
