"""Does the Redis server keep anything on disk? For the DURABLE setting."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def persistence_problem(client: Any) -> str | None:
    """A sentence saying what a crash of this server would lose, or None when
    it writes an append-only file (the only mode that keeps acknowledged jobs)."""
    try:
        config = {_s(k): _s(v) for k, v in client.config_get("appendonly").items()}
        config.update({_s(k): _s(v) for k, v in client.config_get("save").items()})
        config.update({_s(k): _s(v) for k, v in client.config_get("appendfsync").items()})
    except RedisError:
        # CONFIG may be forbidden (ACL, managed Redis); INFO tells whether AOF is on.
        try:
            info = client.info("persistence")
        except RedisError as exc:
            return f"its persistence could not be read ({exc})"
        if int(info.get("aof_enabled", 0)):
            return None
        return "the server writes no append-only file (INFO persistence aof_enabled:0)"
    if config.get("appendonly") == "yes":
        if config.get("appendfsync") == "no":
            return "appendfsync is 'no': the OS decides when jobs reach the disk (up to ~30 s lost on power loss)"
        return None
    if config.get("save"):
        return (
            "the server only takes RDB snapshots (save "
            f"{config['save']!r}): jobs enqueued or finished since the last snapshot are lost on a crash"
        )
    return "the server keeps nothing on disk (no AOF, no RDB): a restart loses every job"
