"""Redis Cluster support: pipelined script calls, and pub/sub on the right node.

In cluster mode (``JOBQUEUE["CLUSTER"] = True``) every key of a queue carries
the queue's hash tag (keys.py), so each script call touches one slot and runs
on the primary that serves it. Two things need more than redis-py's
``RedisCluster`` gives:

* ``ClusterPipeline`` refuses EVALSHA. :func:`run_calls` groups the calls by
  the primary of their first key and sends each group as one plain pipeline on
  that node's own connection (so a WAIT appended to the group counts exactly
  the group's writes). A call refused with NOSCRIPT, MOVED, ASK, TRYAGAIN or
  CLUSTERDOWN did nothing, so it alone is sent again (after a topology refresh
  for MOVED / CLUSTERDOWN); a call whose reply was lost (connection error) may
  have run, so it is never sent again: the error goes to the caller.
* Events are published with SPUBLISH (sharded pub/sub, Redis 7+) when the
  channel carries a hash tag, i.e. in cluster mode (lua/_lib.lua). A sharded
  message stays on the shard that owns the channel's slot instead of being
  broadcast to every node, so pub/sub cost does not grow with the cluster.
  :func:`pubsub` gives a listener the matching subscriber, which turns a
  shard that moved away (failover) into a ConnectionError, so the listener
  subscribes again on the new primary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from .scripts import Script

logger = logging.getLogger("django_jobqueue")

Call = tuple["Script", Sequence[str], Sequence[Any]]

# Rounds of re-sending calls that were redirected or refused while the cluster
# changes (a failover, a slot migration), and the pause between rounds.
MAX_ROUNDS = 8
ROUND_PAUSE_S = 0.1


def is_cluster(client: Any) -> bool:
    """True for a redis-py ``RedisCluster`` client."""
    kind = type(client)
    known = _is_cluster_type.get(kind)
    if known is None:
        from redis.cluster import RedisCluster

        # Asked on every call of every script: the isinstance() check goes
        # through typing's protocol machinery, so it is made once per class.
        known = _is_cluster_type[kind] = isinstance(client, RedisCluster)
    return known


_is_cluster_type: dict[type, bool] = {}


def _refresh(client: Any) -> None:
    """Re-read the slot table (after MOVED, CLUSTERDOWN or a lost node)."""
    try:
        client.nodes_manager.initialize()
    except Exception as exc:  # noqa: BLE001 - the cluster is changing; the next call tries again
        logger.debug("refreshing the cluster's slot table failed: %s", exc)


def run_calls(client: Any, calls: Sequence[Call], wait: tuple[int, int] | None = None) -> tuple[list[Any], int]:
    """Run script calls on a ``RedisCluster``: one pipeline per primary.

    Returns (results in call order, with errors as exception objects, a
    node's connection error as the reply of each of its calls; the fewest
    replicas any node's WAIT counted, or 0 when ``wait`` is None).
    """
    results: list[Any] = [None] * len(calls)
    acked: int | None = None
    # (call index, node to send it to or None for "its slot's primary", ASKING first)
    todo: list[tuple[int, Any, bool]] = [(i, None, False) for i in range(len(calls))]
    for attempt in range(MAX_ROUNDS):
        groups: dict[tuple[str, bool], tuple[Any, list[int]]] = {}
        for i, node, asking in todo:
            target = node or client.get_node_from_key(calls[i][1][0])
            groups.setdefault((target.name, asking), (target, []))[1].append(i)
        todo, refresh = [], False
        for (_name, asking), (node, indexes) in groups.items():
            try:
                out, node_acked = _send(client.get_redis_connection(node), calls, indexes, asking, wait, client)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # That node's calls may or may not have run: the error is their
                # reply, never a reason to send them again. The other nodes'
                # calls are independent of it and still go out.
                for i in indexes:
                    results[i] = exc
                acked = 0 if wait is not None else acked
                continue
            if wait is not None:
                acked = node_acked if acked is None else min(acked, node_acked)
            for i, r in zip(indexes, out, strict=True):
                if isinstance(r, MovedError):  # (a subclass of AskError)
                    results[i] = r
                    todo.append((i, None, False))
                    refresh = True
                elif isinstance(r, AskError):
                    results[i] = r
                    todo.append((i, client.get_node(host=r.host, port=r.port), True))
                elif isinstance(r, (TryAgainError, ClusterDownError)):
                    results[i] = r
                    todo.append((i, None, False))
                    refresh = True
                else:
                    results[i] = r
        if not todo:
            break
        if refresh:
            _refresh(client)
        if attempt < MAX_ROUNDS - 1:
            time.sleep(ROUND_PAUSE_S * attempt)
    return results, acked or 0


def _send(
    node_client: Any,
    calls: Sequence[Call],
    indexes: Sequence[int],
    asking: bool,
    wait: tuple[int, int] | None,
    cluster_client: Any,
) -> tuple[list[Any], int]:
    """One pipeline on one node; NOSCRIPT replies are sent again as EVAL
    (which also caches the script on that node)."""

    def send(idx: Sequence[int], full_source: bool) -> tuple[list[Any], int]:
        pipe = node_client.pipeline(transaction=False)
        for i in idx:
            script, keys, args = calls[i]
            if asking:
                pipe.execute_command("ASKING")
            if full_source:
                pipe.eval(script.source, len(keys), *keys, *args)
            else:
                script.queue_in(pipe, keys, args)
        if wait is not None:
            pipe.execute_command("WAIT", *wait)
        try:
            out = pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError):
            # The node is gone (or slow): which calls ran is unknown, so none
            # is sent again here. Learn the new topology for the next call.
            _refresh(cluster_client)
            raise
        node_acked = 0
        if wait is not None:
            last = out.pop()
            node_acked = 0 if isinstance(last, Exception) else int(last)
        if asking:
            out = out[1::2]  # drop the ASKING replies
        return out, node_acked

    out, acked = send(indexes, False)
    missing = [n for n, r in enumerate(out) if isinstance(r, NoScriptError)]
    if missing:
        again, acked_again = send([indexes[n] for n in missing], True)
        for n, r in zip(missing, again, strict=True):
            out[n] = r
        acked = min(acked, acked_again) if wait is not None else 0
    return out, acked


class ShardMoved(RedisConnectionError):
    """A subscribed shard channel's slot moved (failover, resharding): the
    subscriber must subscribe again, on the new owner."""


def pubsub(client: Any) -> Any:
    """A pub/sub object for events channels: ``client.pubsub()`` on one Redis,
    a :class:`ShardedPubSub` on a cluster. Both offer what a listener needs:
    ``subscribe(*channels)``, ``get_message(timeout=...)`` (message types
    ``subscribe`` and ``message``) and ``close()``."""
    if is_cluster(client):
        return ShardedPubSub(client)
    return client.pubsub(ignore_subscribe_messages=False)


class ShardedPubSub:
    """SSUBSCRIBE to shard channels on the primaries that own them: one plain
    pub/sub connection per node, of our own.

    Not redis-py's ClusterPubSub: its ``get_sharded_message`` waits the whole
    timeout on each node in turn (a quiet node holds up a busy one), and it
    moves subscriptions in the background when the topology changes, where we
    want the change to be loud. Here a channel the server drops (its slot
    moved: Redis sends ``sunsubscribe``) or a lost node raises a
    ConnectionError (after the slot table is refreshed), and the caller
    subscribes again with a new object, on the new owner, then reads what it
    missed from the events log.
    """

    # Each node's connection is polled for at most this long in turn.
    SLICE_S = 0.05
    _KINDS = {"ssubscribe": "subscribe", "smessage": "message"}

    def __init__(self, client: Any) -> None:
        self.client = client
        self._nodes: dict[str, Any] = {}  # node name -> redis-py PubSub on that node
        self._turn = 0

    def subscribe(self, *channels: str) -> None:
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for channel in channels:
            node = self.client.get_node_from_key(channel)
            by_node.setdefault(node.name, (node, []))[1].append(channel)
        try:
            for name, (node, names) in by_node.items():
                node_client = self.client.get_redis_connection(node)
                if name not in self._nodes:
                    self._nodes[name] = node_client.pubsub(ignore_subscribe_messages=False)
                self._nodes[name].ssubscribe(*names)
                for channel in names:
                    # Checked after subscribing: a node that serves the slot now
                    # tells us (sunsubscribe) when it stops. A stale slot table
                    # can name a replica, which takes SSUBSCRIBE too but misses
                    # messages while it re-syncs: refuse it and let the caller retry.
                    try:
                        node_client.exists(channel)
                    except (AskError, ClusterDownError, TryAgainError) as exc:  # MOVED is an AskError
                        _refresh(self.client)
                        raise ShardMoved(f"{name} does not serve shard channel {channel!r} (yet)") from exc
        except (RedisConnectionError, RedisTimeoutError):
            _refresh(self.client)
            raise

    def get_message(self, timeout: float = 0.0, **_ignored: Any) -> dict[str, Any] | None:
        """The next message from any node, or None after ``timeout`` seconds.

        Every node is first asked without waiting (a busy node must not make
        the others wait, nor starve them: each call starts at the next node);
        only when none has a message does it wait, a short slice on each in turn.
        """
        deadline = time.monotonic() + timeout
        nodes = list(self._nodes.values())
        if not nodes:
            return None
        self._turn = (self._turn + 1) % len(nodes)
        nodes = nodes[self._turn :] + nodes[: self._turn]
        waiting = False
        while True:
            for ps in nodes:
                wait = max(0.0, min(self.SLICE_S, deadline - time.monotonic())) if waiting else 0.0
                try:
                    message = ps.get_message(timeout=wait)
                except (RedisConnectionError, RedisTimeoutError):
                    _refresh(self.client)
                    raise
                if message is not None:
                    return self._classic(message)
            if time.monotonic() >= deadline:
                return None
            waiting = True

    def _classic(self, message: dict[str, Any]) -> dict[str, Any]:
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "sunsubscribe":
            _refresh(self.client)
            raise ShardMoved(f"shard channel {message.get('channel')!r} moved to another node")
        message["type"] = self._KINDS.get(kind, kind)
        return message

    def close(self) -> None:
        for ps in self._nodes.values():
            try:
                ps.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead connection must not raise
                logger.debug("closing a shard pub/sub connection failed: %s", exc)
        self._nodes.clear()
