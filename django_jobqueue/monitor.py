"""Read-only views of the queues and workers, for jobq_stats, the admin and monitoring."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .engine import browse
from .engine.keys import GlobalKeys


def queue_names(names: Sequence[str] | None = None) -> list[str]:
    """The named queues (checked), or every configured queue."""
    settings = get_settings()
    if not names:
        return list(settings.queues)
    return [settings.queue(n).name for n in names]


def queue_stats(names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """queue name -> RedisJobQueue.stats()."""
    return {name: get_queue(name).stats() for name in queue_names(names)}


def workers() -> list[dict[str, Any]]:
    """The registered workers, newest heartbeat first, with how long ago it was.

    Claim tokens are never part of what this returns.
    """
    settings = get_settings()
    now_ms = time.time() * 1000
    out = []
    for w in browse.workers(get_client(), GlobalKeys(settings.key_prefix, settings.cluster)):
        beat = w.pop("beat_ms")
        w["beat_age_s"] = round(max(0.0, now_ms - beat) / 1000, 1)
        w["running"] = [list(j) for j in w.pop("jobs")]
        out.append(w)
    return out
