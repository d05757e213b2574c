"""Sending commands straight on a pooled connection of a single Redis.

redis-py's pipeline keeps per-command bookkeeping that costs about as much as
the worker's own work per job; the hot calls (a claim with its completions,
an enqueue) are written here as one packed buffer, their replies read in
order, on a connection each thread keeps between its calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from redis import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import cluster as _cluster

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # redis-py's own packer is used
    _pack_command = None
else:
    _pack_command = pack_command


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
