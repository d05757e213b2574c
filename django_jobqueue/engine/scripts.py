"""Loading and running the Lua scripts in ``lua/``.

Each script is read once, its ``--@include name`` lines replaced by the shared
``lua/name.lua`` snippets, and its SHA1 computed locally. Calls go out as
EVALSHA; a NOSCRIPT reply (after SCRIPT FLUSH, or a Redis restarted without
its script cache) loads the script and retries once, so callers never see it.

What each script declares (its KEYS and ARGV, by name) is read from its header
by declarations.py; the hot calls are written on the connection by direct.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from . import cluster as _cluster
from .declarations import INCLUDE, argv_builder, declaration, keys_builder, lua_text
from .direct import can_send_direct, send_direct


class Script:
    """One Lua script, ready to run on any client or pipeline."""

    def __init__(self, name: str) -> None:
        if name.startswith("_"):
            raise ValueError(f"{name}.lua is a library, pasted into scripts by --@include, not a script")
        self.name = name
        self.spec = declaration(name)
        self.source = INCLUDE.sub(lambda m: lua_text(m.group(1)), lua_text(name))
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()  # noqa: S324 - Redis's script id
        # A call's KEYS and ARGV, in the order the header declares, from their
        # names: keys_for(queue.keys, job=...) reads each key the keys object
        # holds from it, and takes the others (spec.given_keys) by name;
        # argv_for(now=..., id=...) takes every argument by name, a tail as
        # one sequence. A name left out or unknown is a TypeError.
        self.keys_for: Callable[..., list[str]] = keys_builder(self.spec)
        self.argv_for: Callable[..., list[Any]] = argv_builder(self.spec)

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL runs it and caches it, on the one node that needs it: a
            # cluster's SCRIPT LOAD would go to every primary, and fail while
            # any of them is down.
            return client.eval(self.source, len(keys), *keys, *args)

    def call_idempotent(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Like calling the script, for calls that are safe to send twice (an
        enqueue with its id chosen by the caller: the script recognises the
        resent call). Written straight on a pooled connection, without
        redis-py's per-command bookkeeping, which costs about as much as the
        round trip; sent once more after a connection error (the connection
        was closed or reset: a pooled one the server closed while it was idle,
        or a reply lost with its connection), never after a timeout.
        """
        if not can_send_direct(client):
            return self(client, keys, args)
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            # Without the check for a connection the server closed: the call
            # is sent again below if it was, which costs nothing when it was not.
            (reply,) = send_direct(client, [command], check=False)
        except RedisConnectionError:
            # Not after a TimeoutError: the server took the call and has not
            # answered within SOCKET_TIMEOUT (hung, or busy with a long
            # script); a second call would wait as long again, and the caller
            # was promised one SOCKET_TIMEOUT (docs/settings.md).
            (reply,) = send_direct(client, [command])
        if isinstance(reply, NoScriptError):
            (reply,) = send_direct(client, [("EVAL", self.source, len(keys), *keys, *args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def queue_in(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add a call to a pipeline; see :func:`run_pipeline` for NOSCRIPT."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


@cache
def get(name: str) -> Script:
    return Script(name)


def run_pipeline(
    client: Any,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
    *,
    retry: bool = True,
    raise_on_error: bool = True,
) -> list[Any]:
    """Run script calls in one pipeline (one round trip when the scripts are cached).

    The pipeline is not a transaction: each call is atomic on its own. Calls
    refused with NOSCRIPT did nothing, so they alone are sent again once the
    scripts are loaded; calls that ran are never repeated. Other errors are
    raised after every call has had its turn.

    ``retry=False`` (the worker's claims and completions): written straight on
    a pooled connection, without redis-py's pipeline bookkeeping (it costs more
    than the worker's own work per job) and without its retry on a connection
    error, since a claim sent again after a lost reply would claim other jobs
    while the first ones wait out their lease. The worker retries after a pause.

    ``raise_on_error=False``: each call's error comes back as its reply (an
    exception object) and the other calls' replies are kept, for callers that
    batch calls of different kinds: a completion refused must not discard a
    claim that succeeded in the same pipeline. On a cluster a node that
    cannot be reached gives its connection error as the reply of each of its
    calls; on one Redis a connection error is raised (which calls ran is unknown).
    """
    results, _acked = _execute(client, calls, None, retry, raise_on_error)
    return results


def run_pipeline_and_wait(
    client: Any, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]], replicas: int, timeout_ms: int
) -> tuple[list[Any], int]:
    """run_pipeline(), then Redis WAIT in the same pipeline: WAIT counts the
    replicas that have every write made so far on its connection, and a
    pipeline is one connection. Returns (results, replicas that acknowledged)."""
    return _execute(client, calls, (replicas, timeout_ms), True, True)


def _execute(
    client: Any,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]],
    wait: tuple[int, int] | None,
    retry: bool,
    raise_on_error: bool,
) -> tuple[list[Any], int]:
    if _cluster.is_cluster(client):  # ClusterPipeline refuses EVALSHA: one pipeline per primary
        results, acked = _cluster.run_calls(client, calls, wait)
        if raise_on_error:
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return results, acked

    def send(indexes: Sequence[int]) -> tuple[list[Any], int]:
        if retry:
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                calls[i][0].queue_in(pipe, calls[i][1], calls[i][2])
            if wait is not None:
                pipe.execute_command("WAIT", *wait)
            out = pipe.execute(raise_on_error=False)
        else:
            out = send_direct(
                client, [("EVALSHA", calls[i][0].sha, len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in indexes]
            )
        acked = int(out.pop()) if wait is not None and not isinstance(out[-1], Exception) else 0
        return out, acked

    results, acked = send(range(len(calls)))
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            client.script_load(script.source)
        retried, acked_retry = send(missing)
        for i, r in zip(missing, retried, strict=True):
            results[i] = r
        acked = min(acked, acked_retry)
    if raise_on_error:
        for r in results:
            if isinstance(r, Exception):
                raise r
    return results, acked
