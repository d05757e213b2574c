"""Loading and running the Lua scripts in ``lua/``.

Each script is read once, its ``--@include name`` lines replaced by the shared
``lua/name.lua`` snippets, and its SHA1 computed locally. Calls go out as
EVALSHA; a NOSCRIPT reply (after SCRIPT FLUSH, or a Redis restarted without
its script cache) loads the script and retries once, so callers never see it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import cluster as _cluster

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # redis-py's own packer is used
    _pack_command = None

_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)


def _read(name: str) -> str:
    return resources.files("django_jobqueue").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Script:
    """One Lua script, ready to run on any client or pipeline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _INCLUDE.sub(lambda m: _read(m.group(1)), _read(name))
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()  # noqa: S324 - Redis's script id

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


def can_send_direct(client: Any) -> bool:
    """Whether :func:`send_direct` works with this client (a single Redis, not
    a cluster: a cluster client routes each command to its node)."""
    return not _cluster.is_cluster(client) and hasattr(client, "connection_pool")


def send_direct(client: Any, commands: Sequence[tuple[Any, ...]], *, check: bool = True) -> list[Any]:
    """Write the commands on one pooled connection at once, read every reply.

    What ``client.pipeline(transaction=False).execute(raise_on_error=False)``
    does, minus its per-command bookkeeping and its retry. Error replies come
    back as exceptions in the list; a connection error is raised after the
    connection is dropped. ``check=False`` skips the look for a connection the
    server has closed since the thread's last call (a system call), for
    callers that send again after a connection error anyway.
    """
    conn, held = _connection(client, check)
    try:
        conn.send_packed_command(_pack(conn, commands))
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(conn.read_response())
            except ResponseError as exc:
                out.append(exc)
    except BaseException:
        # Replies may be left unread on it: never use it again as it is.
        conn.disconnect()
        if held:
            _held.slot = None  # gives it back to its pool (disconnected)
        raise
    finally:
        if not held:
            client.connection_pool.release(conn)
    return out


class _Held:
    """The pooled connection one thread keeps between its calls.

    Taking a connection from a redis-py pool and giving it back costs locks,
    system calls and bookkeeping each time: about a third of a round trip on a
    small VM, paid by every enqueue() and every claim. So each thread keeps the
    last one it used, checked out of the pool as far as the pool knows, and
    gives it back when the thread ends (its thread-local slot is cleared) or
    it moves to another pool. A forked child never uses its parent's (the fork
    count check): they would share a socket.
    """

    __slots__ = ("conn", "forks", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.forks = _forks
        self.conn = _checkout(pool)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # also at interpreter exit
            if self.forks == _forks:  # a parent's connection is not the child's to give back
                self.pool.release(self.conn)


_held = threading.local()
# Forks this process descends from: cheaper to compare on every call than
# os.getpid(), a system call.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _connection(client: Any, check: bool = True) -> tuple[Any, bool]:
    """(a connection for the calling thread, whether it is held between calls)."""
    pool = client.connection_pool
    if isinstance(pool, BlockingConnectionPool):
        # A capped pool: a connection kept idle by one thread could starve
        # the others. Taken and given back each time.
        return _checkout(pool), False
    slot = getattr(_held, "slot", None)
    if slot is None or slot.pool is not pool or slot.forks != _forks:
        slot = _held.slot = _Held(pool)
        return slot.conn, True
    if not check:
        return slot.conn, True
    # What the pool checks on every checkout, kept: a socket with something to
    # read before we sent anything was closed by the server (a restart, a
    # failover, an idle timeout), so reconnect now rather than fail the call.
    conn = slot.conn
    try:
        stale = conn.can_read()
    except (RedisConnectionError, RedisTimeoutError, OSError):
        stale = True
    if stale:
        conn.disconnect()
    return conn, True


def _checkout(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        return pool.get_connection("EVALSHA")


def _pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """The commands in Redis's protocol; with hiredis, straight from its C
    packer (redis-py's wrapper around it costs a generator per command)."""
    if _pack_command is None:
        return conn.pack_commands(commands)
    try:
        return [b"".join(_pack_command(c) for c in commands)]
    except TypeError as exc:
        raise DataError(f"cannot send {exc}") from exc
