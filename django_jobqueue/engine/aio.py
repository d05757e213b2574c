"""Running the Lua scripts from asyncio, on a ``redis.asyncio`` client: the
awaited twins of ``Script.call_idempotent`` and ``scripts.run_pipeline`` (and
its WAIT), for the async enqueue (async_queue.py).

The rules are the synchronous ones: calls go out as EVALSHA; those refused
with NOSCRIPT did nothing, so they alone are sent again once their scripts
are loaded; a call safe to send twice (an enqueue, whose script recognises
its job id) is sent once more after a connection error. On a cluster each
call goes to its slot's primary by itself (the calls of one enqueue share
the queue's slot); WAIT is not offered there (see async_queue.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from .scripts import Script

Call = tuple[Script, Sequence[str], Sequence[Any]]


def is_async_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


async def call_idempotent(client: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """One script call that is safe to send twice: once more after a connection error."""
    try:
        return await _call(client, script, keys, args)
    except RedisConnectionError:
        # Not after a TimeoutError: the server has the call and is slow to
        # answer; a second call would wait as long again.
        return await _call(client, script, keys, args)


async def _call(client: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # EVAL runs it and caches it on the one node that needs it.
        return await client.eval(script.source, len(keys), *keys, *args)


async def run_pipeline(
    client: Any, calls: Sequence[Call], wait: tuple[int, int] | None = None
) -> tuple[list[Any], int]:
    """Run script calls in one pipeline (each atomic on its own, none
    repeated once it ran), then, with ``wait`` (replicas, timeout ms), WAIT on
    the same connection. Returns (results, replicas that acknowledged); the
    first error among the results is raised."""
    if is_async_cluster(client):
        if wait is not None:
            raise ValueError("WAIT needs the writes' own connection, which a cluster client does not lend")
        results = list(await asyncio.gather(*(call_idempotent(client, *c) for c in calls)))
        return _raised(results), 0

    async def send(indexes: Sequence[int]) -> tuple[list[Any], int]:
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            script, keys, args = calls[i]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if wait is not None:
            pipe.execute_command("WAIT", *wait)
        out = list(await pipe.execute(raise_on_error=False))
        acked = int(out.pop()) if wait is not None and not isinstance(out[-1], Exception) else 0
        return out, acked

    results, acked = await send(range(len(calls)))
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            await client.script_load(script.source)
        retried, acked_again = await send(missing)
        for i, r in zip(missing, retried, strict=True):
            results[i] = r
        acked = min(acked, acked_again)
    return _raised(results), acked


def _raised(results: list[Any]) -> list[Any]:
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results
