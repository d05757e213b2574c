"""A queue's flow limits as people read and change them: the admin
(admin_limits.py) and ``manage.py jobq_queues`` share these words, the
parsing of what an operator types, and the record of a change.

The engine holds the limits (engine/limits.py): the settings' values, the
run-time overrides kept in Redis, and what is in use now. Here they become
text ("2", "10/s", "none"; "1 of 2 slots in use"), and a change made here
says what it changed from what to what, read from the engine's own record of
it (taken in the same script as the change, so two people changing limits at
once each get their own before and after).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from .engine.limits import FlowLimits, LimitsState, Rate, effective, parse_rate, read_state, set_limits
from .engine.queue import RedisJobQueue

# Longest text of a stored record shown (who made a change: whatever was stored).
WHO_LIMIT = 200
_WINDOW_WORDS = {1000: "this second", 60_000: "this minute", 3_600_000: "this hour"}


@dataclass(frozen=True)
class LimitsView:
    """A queue's limits in words, as both the admin and jobq_queues show them."""

    queue: str
    global_concurrency: str  # "2" or "none"
    rate_limit: str  # "10/s" or "none"
    concurrency_overridden: bool  # set at run time, not from the settings
    rate_overridden: bool
    concurrency_source: str  # "from settings" or "set at run time (settings: 2)"
    rate_source: str
    slots: str  # "1 of 2 slots in use", or "1 in use (no limit)"
    rate_use: str  # "3 of 5 this second", or "" without a rate limit
    keys_waiting: str  # "2 concurrency keys with jobs waiting", or ""
    last_change: dict[str, Any] | None  # {"who", "ts_ms"} of the newest change
    # The form's initial values: the limits in force ("" for none).
    concurrency_input: str
    rate_input: str
    unreadable: str = ""  # why the limits could not be read ("" when they could)

    @property
    def overridden(self) -> bool:
        return self.concurrency_overridden or self.rate_overridden

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "global_concurrency": self.global_concurrency,
            "global_concurrency_source": "run time" if self.concurrency_overridden else "settings",
            "rate_limit": self.rate_limit,
            "rate_limit_source": "run time" if self.rate_overridden else "settings",
            "slots": self.slots,
            "rate_use": self.rate_use,
            "keys_waiting": self.keys_waiting,
            "last_change": self.last_change,
            "unreadable": self.unreadable,
        }


def concurrency_text(cap: int) -> str:
    return str(cap) if cap > 0 else "none"


def rate_text(rate: Rate | None) -> str:
    return str(rate) if rate is not None else "none"


def window_words(window_ms: int) -> str:
    """A rate's window as the usage line says it: "this second", "in the last 10s"."""
    return _WINDOW_WORDS.get(window_ms) or f"in the last {str(Rate(1, window_ms)).split('/', 1)[1]}"


def limits_view(queue: RedisJobQueue) -> LimitsView:
    """The queue's limits and their use now, in words. A limits hash or log
    that Redis cannot read as one (a key of another type, written by hand)
    is said so, and the rest of the page is still served."""
    try:
        state = read_state(queue.client, queue.keys, queue.limits, log=1)
    except ResponseError as exc:
        return _unreadable(queue, str(exc))
    return describe(queue.queue_name, state)


def _unreadable(queue: RedisJobQueue, why: str) -> LimitsView:
    configured = queue.limits
    return LimitsView(
        queue=queue.queue_name,
        global_concurrency=concurrency_text(configured.global_concurrency),
        rate_limit=rate_text(configured.rate),
        concurrency_overridden=False,
        rate_overridden=False,
        concurrency_source="from settings",
        rate_source="from settings",
        slots="unknown",
        rate_use="",
        keys_waiting="",
        last_change=None,
        concurrency_input=str(configured.global_concurrency or ""),
        rate_input=rate_text(configured.rate) if configured.rate else "",
        unreadable=f"the run-time limits cannot be read: {why[:WHO_LIMIT]}",
    )


def describe(name: str, state: LimitsState) -> LimitsView:
    limits, configured = state.effective, state.configured
    cap_over = "global_concurrency" in state.overridden
    rate_over = "rate_limit" in state.overridden
    cap, rate = limits.global_concurrency, limits.rate
    if cap > 0:
        slots = f"{state.slots_in_use} of {cap} slot{'' if cap == 1 else 's'} in use"
    else:
        slots = f"{state.slots_in_use} in use (no limit)"
    rate_use = f"{state.rate_used} of {rate.count} {window_words(rate.window_ms)}" if rate is not None else ""
    newest = state.changes[0] if state.changes else None
    last_change = None
    if newest is not None:
        ts_ms = newest.get("ts_ms")
        last_change = {
            "who": str(newest.get("who", ""))[:WHO_LIMIT],
            "ts_ms": ts_ms if isinstance(ts_ms, int) and not isinstance(ts_ms, bool) else None,
        }
    return LimitsView(
        queue=name,
        global_concurrency=concurrency_text(cap),
        rate_limit=rate_text(rate),
        concurrency_overridden=cap_over,
        rate_overridden=rate_over,
        concurrency_source=_source(cap_over, concurrency_text(configured.global_concurrency)),
        rate_source=_source(rate_over, rate_text(configured.rate)),
        slots=slots,
        rate_use=rate_use,
        keys_waiting=keys_waiting_text(state.keys_waiting),
        last_change=last_change,
        concurrency_input=str(cap) if cap > 0 else "",
        rate_input=str(rate) if rate is not None else "",
    )


def keys_waiting_text(n: int) -> str:
    """Concurrency keys (@job(concurrency_key=...)) with jobs set aside until a slot of theirs frees."""
    if n <= 0:
        return ""
    return f"{n} concurrency key{'' if n == 1 else 's'} with jobs waiting for a slot"


def _source(overridden: bool, settings_value: str) -> str:
    return f"set at run time (settings: {settings_value})" if overridden else "from settings"


# ------------------------------------------------------------- changing


def parse_concurrency(text: str) -> int:
    """What an operator typed for the global concurrency: blank or 0 for no
    limit, else a whole number of jobs; ValueError saying so otherwise."""
    text = text.strip()
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ValueError(
            f"the global concurrency is a whole number of jobs, 0 or blank for no limit (got {text[:WHO_LIMIT]!r})"
        )
    return int(text)


def parse_rate_limit(text: str) -> Rate | None:
    """What an operator typed for the rate limit: blank for none, else a rate
    like "10/s" (engine/limits.py parse_rate); ValueError saying so otherwise."""
    text = text.strip()
    if not text:
        return None
    return parse_rate(text[: WHO_LIMIT + 1])


@dataclass(frozen=True)
class Change:
    """A change made: its record (engine/limits.py), and what it did in words."""

    record: dict[str, Any]
    message: str  # "global concurrency from 2 (from settings) to 5 (set at run time)"
    changed: bool


def change_limits(
    queue: RedisJobQueue,
    *,
    who: str,
    global_concurrency: int | None = None,
    rate: Rate | None = None,
    set_concurrency: bool = False,
    set_rate: bool = False,
    reset: bool = False,
) -> Change:
    """Set the queue's run-time limits (those flagged with ``set_*``), or
    reset them to the settings', and say what changed from what to what."""
    options: dict[str, Any] = {"reset": reset}
    if set_concurrency:
        options["global_concurrency"] = global_concurrency
    if set_rate:
        options["rate"] = rate
    stored = set_limits(queue.client, queue.keys, who=who, **options)
    before = _as_overrides(stored.get("before"))
    after = _as_overrides(stored.get("after"))
    message = describe_change(queue.limits, before, after)
    return Change(stored, message or "nothing changed: the limits were already so", bool(message))


def _as_overrides(value: Any) -> dict[str, str] | None:
    if value == []:  # an empty hash, as Lua's JSON may write it
        return {}
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def describe_change(configured: FlowLimits, before: dict[str, str] | None, after: dict[str, str] | None) -> str:
    """What a change did, from the override hashes before and after it: ""
    when it changed nothing."""
    if before is None or after is None:
        return "limits changed (their earlier values are no longer on record)"
    old, old_over = effective(configured, before)
    new, new_over = effective(configured, after)
    parts = []
    for label, key, old_text, new_text in (
        (
            "global concurrency",
            "global_concurrency",
            concurrency_text(old.global_concurrency),
            concurrency_text(new.global_concurrency),
        ),
        ("rate limit", "rate_limit", rate_text(old.rate), rate_text(new.rate)),
    ):
        was, now = key in old_over, key in new_over
        if (old_text, was) != (new_text, now):
            parts.append(f"{label} from {old_text} ({_origin(was)}) to {new_text} ({_origin(now)})")
    return "; ".join(parts)


def _origin(overridden: bool) -> str:
    return "set at run time" if overridden else "from settings"
