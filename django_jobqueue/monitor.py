"""Read-only views of the queues and workers, for jobq_stats, the admin and monitoring."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .keys import GlobalKeys


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


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
    keys = GlobalKeys(settings.key_prefix, settings.cluster)
    client = get_client()
    entries = client.zrevrange(keys.workers, 0, -1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for wid, _beat in entries:
        pipe.hgetall(keys.worker(_s(wid)))
    now_ms = time.time() * 1000
    out = []
    for (wid, beat), raw in zip(entries, pipe.execute(), strict=True):
        record = {_s(k): _s(v) for k, v in raw.items()}
        try:
            running = [[q, i] for q, i, *_token in json.loads(record.get("jobs", "[]"))]
        except (ValueError, TypeError):
            running = []
        try:
            queues = json.loads(record.get("queues", "[]"))
        except ValueError:
            queues = []
        out.append(
            {
                "id": _s(wid),
                "host": record.get("host", ""),
                "pid": record.get("pid", ""),
                "queues": queues,
                "concurrency": record.get("concurrency", ""),
                "state": record.get("state", ""),
                "started_at_ms": int(record["started_at_ms"]) if record.get("started_at_ms", "").isdigit() else None,
                "beat_age_s": round(max(0.0, now_ms - beat) / 1000, 1),
                "running": running,
            }
        )
    return out
