"""The events listener: the Redis events channels -> the Django signals.

Every state change a Lua script makes is published on ``<prefix>:<queue>:events``
and, while a listener has announced itself in the last LISTENING_TTL_S,
appended to a capped stream beside it, the events log
(``<prefix>:<queue>:events:log``, about the last 10 000 events). The published
message then carries its log entry's id as ``log_id``.

Delivery, in short (docs/signals.md says more):

- Pub/sub is at-most-once: Redis does not buffer a channel for a subscriber
  that is disconnected. While the listener is cut off from Redis, nothing is
  delivered to it.
- On every (re)subscription the listener reads the log from the last id it saw,
  so what was published while it was away is caught up, as long as the log
  still holds it (it is capped). Entries already fired are recognised by their
  id and never fired twice. When the log no longer reaches back far enough, or
  was lost with Redis's data, a WARNING says events may have been missed.

``manage.py jobq_events`` runs a listener in the foreground;
``start_listener_thread()`` runs one in a daemon thread (a worker does, with
WORKER_EVENTS_LISTENER).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import close_old_connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .conf import get_settings
from .connection import get_client
from .engine import cluster
from .engine.keys import QueueKeys
from .signals import EVENT_SIGNALS, job_event

logger = logging.getLogger("django_jobqueue.events")

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
# get_message() waits at most this long, so stop() is noticed within it.
POLL_SECONDS = 0.5
# Log entries read per XRANGE while catching up.
CATCH_UP_BATCH = 500
# The scripts write the events log only while `<events>:listening` exists: a
# listener sets it with this TTL and refreshes it every LISTENING_REFRESH_S,
# so the log goes on through a disconnect or restart of up to about this long.
LISTENING_TTL_S = 600
LISTENING_REFRESH_S = 60


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_log_id(value: Any) -> tuple[int, int] | None:
    """A stream entry id ``"<ms>-<seq>"`` as a comparable pair, or None."""
    try:
        ms, _, seq = _s(value).partition("-")
        return int(ms), int(seq or 0)
    except (TypeError, ValueError):
        return None


def fire(message: Mapping[str, Any], queue: str) -> int:
    """Send the signals for one decoded event message; returns how many
    receivers ran. A receiver that raises is logged, never propagated."""
    kwargs: dict[str, Any] = {
        "job_id": str(message.get("id", "")),
        "queue": queue,
        "name": str(message.get("name", "")),
        "status": str(message.get("status", "")),
        "attempts": message.get("attempts", 0),
        "event": dict(message),
    }
    for optional in ("result", "error", "schedule", "reason", "ran"):
        if optional in message:
            kwargs[optional] = message[optional]
    responses: list[tuple[Any, Any]] = []
    specific = EVENT_SIGNALS.get(str(message.get("event", "")))
    if specific is not None:
        responses += specific.send_robust(sender=queue, **kwargs)
    responses += job_event.send_robust(sender=queue, **kwargs)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "signal receiver %r raised on %s event of job %s",
                receiver,
                message.get("event"),
                kwargs["job_id"],
                exc_info=response,
            )
    return len(responses)


class EventsListener:
    """Subscribe to the events channel of each queue and fire the signals.

    ``run()`` blocks until ``stop()`` is called (from another thread or a
    signal handler); Redis going away is logged and retried with backoff.
    """

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        client: Any = None,
        catch_up: bool = True,
        reconnect_min_seconds: float = 0.2,
        reconnect_max_seconds: float = 10.0,
    ) -> None:
        settings = get_settings()
        names = [settings.queue(n).name for n in queues] if queues else list(settings.queues)
        self.queues = names
        self.keys = {n: QueueKeys(settings.key_prefix, n, settings.cluster) for n in names}
        self._by_channel = {k.events: n for n, k in self.keys.items()}
        self._client = client
        self.catch_up = catch_up
        self.reconnect_min_seconds = reconnect_min_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        # Set once the first subscription is confirmed (and caught up): from
        # then on every event of these queues fires the signals.
        self.ready = threading.Event()
        self.fired = 0  # events fired
        self.caught_up = 0  # of which read back from the log
        self._stop = threading.Event()
        self._last: dict[str, str] = {}  # queue -> id of the last log entry fired (or the baseline)
        self._seen_subscribe: set[str] = set()
        self._down_since: float | None = None
        self._delay = reconnect_min_seconds
        self._announced = float("-inf")  # when the events log was last asked for

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else get_client()

    def stop(self) -> None:
        """Ask run() to return (thread-safe, signal-handler-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Listen until stopped."""
        logger.info("events listener: queues %s", ", ".join(self.queues))
        while not self._stop.is_set():
            try:
                self._listen()
            except CONNECTION_ERRORS as exc:
                self._disconnected(exc)
            except RedisError as exc:
                logger.error("events listener: Redis error: %s; retrying in %.1f s", exc, self._delay)
            else:
                continue  # _listen returns only when stopped
            if self._stop.wait(self._delay):
                break
            # Back off while Redis stays away; a confirmed subscription resets it.
            self._delay = min(self._delay * 2, self.reconnect_max_seconds)
        logger.info("events listener stopped: %d events fired (%d caught up from the log)", self.fired, self.caught_up)

    def _disconnected(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "events listener: lost Redis (%s); reconnecting. Events published while disconnected "
                "are not delivered by pub/sub (it does not buffer): they will be read back from the "
                "events log if it still holds them, otherwise they are missed",
                exc,
            )
        else:
            logger.info("events listener: Redis still unavailable (%s); retrying in %.1f s", exc, self._delay)

    def _listen(self) -> None:
        client = self.client
        if self.catch_up:
            self._announce(client)
            for queue in self.queues:
                if queue not in self._last:
                    # The baseline, read before subscribing: events after it are
                    # caught up once subscribed, so none falls in between.
                    self._last[queue] = self._latest_id(client, queue)
        pubsub = cluster.pubsub(client)  # SSUBSCRIBE on a Redis Cluster (sharded pub/sub), else SUBSCRIBE
        try:
            pubsub.subscribe(*self._by_channel)
            while not self._stop.is_set():
                if self.catch_up and time.monotonic() - self._announced >= LISTENING_REFRESH_S:
                    self._announce(client)
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is None:
                    continue
                kind = _s(message.get("type"))
                message_queue = self._by_channel.get(_s(message.get("channel")))
                if message_queue is None:
                    continue
                if kind == "subscribe":
                    self._subscribed(client, message_queue)
                elif kind == "message":
                    self._on_message(message_queue, message.get("data"))
        finally:
            try:
                pubsub.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead connection must not mask the cause
                logger.debug("closing the pubsub connection failed: %s", exc)

    def _subscribed(self, client: Any, queue: str) -> None:
        self._delay = self.reconnect_min_seconds
        again = queue in self._seen_subscribe
        self._seen_subscribe.add(queue)
        if again and self._down_since is None:
            # redis-py reconnected (and re-subscribed) on its own, after a blip.
            logger.warning(
                "events listener: re-subscribed to %s after a reconnect; events published meanwhile were "
                "not delivered by pub/sub (it does not buffer): reading them back from the events log",
                queue,
            )
        if self._down_since is not None:
            logger.warning(
                "events listener: Redis is back after %.1f s; catching up from the events log",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        if self.catch_up:
            self._catch_up(client, queue)
        if not self.ready.is_set() and len(self._seen_subscribe) == len(self.queues):
            logger.info("events listener: subscribed; firing signals for every event from now on")
            self.ready.set()

    # -------------------------------------------------------------- messages

    def _on_message(self, queue: str, data: Any) -> None:
        try:
            message = json.loads(_s(data))
        except ValueError:
            logger.warning("events listener: undecodable message on %s: %r", queue, _s(data)[:200])
            return
        if not isinstance(message, dict):
            logger.warning("events listener: unexpected message on %s: %r", queue, _s(data)[:200])
            return
        log_id = message.get("log_id")
        if self.catch_up and log_id is not None:
            seen, this = parse_log_id(self._last.get(queue)), parse_log_id(log_id)
            if seen is not None and this is not None:
                if this <= seen:
                    return  # already fired while catching up from the log
                self._last[queue] = _s(log_id)
        self._fire(message, queue)

    def _fire(self, message: Mapping[str, Any], queue: str) -> None:
        logger.debug("event %s %s job %s", queue, message.get("event"), message.get("id"))
        # Receivers may use the database: drop connections that went stale
        # while this process waited for events, as the worker does around jobs.
        close_old_connections()
        try:
            fire(message, queue)
        finally:
            close_old_connections()
        self.fired += 1

    # --------------------------------------------------------------- the log

    def _announce(self, client: Any) -> None:
        """Ask the scripts to keep the events log (see LISTENING_TTL_S)."""
        self._announced = time.monotonic()
        for queue, keys in self.keys.items():
            try:
                client.set(keys.events_listening, "1", ex=LISTENING_TTL_S)
            except ResponseError as exc:  # e.g. an ACL user without SET: signals still fire live
                logger.warning(
                    "events listener: cannot ask for the events log of %s (%s): events published "
                    "while this listener is disconnected will not be caught up",
                    queue,
                    exc,
                )

    def _latest_id(self, client: Any, queue: str) -> str:
        try:
            newest = client.xrevrange(self.keys[queue].events_log, "+", "-", count=1)
        except ResponseError as exc:  # e.g. WRONGTYPE: the channel still works
            logger.warning("events listener: the events log of %s cannot be read: %s", queue, exc)
            return "0-0"
        return _s(newest[0][0]) if newest else "0-0"

    def _catch_up(self, client: Any, queue: str) -> None:
        try:
            self._read_log(client, queue)
        except ResponseError as exc:
            logger.warning(
                "events listener: the events log of %s cannot be read (%s): events missed while "
                "disconnected cannot be caught up",
                queue,
                exc,
            )

    def _read_log(self, client: Any, queue: str) -> None:
        key = self.keys[queue].events_log
        last = self._last.get(queue, "0-0")
        self._check_gap(client, queue, key, last)
        last = self._last.get(queue, "0-0")
        count = 0
        while not self._stop.is_set():
            entries = client.xrange(key, f"({last}", "+", count=CATCH_UP_BATCH)
            for entry_id, fields in entries:
                entry_id = _s(entry_id)
                last = self._last[queue] = entry_id
                data = {_s(k): v for k, v in fields.items()}.get("data")
                try:
                    message = json.loads(_s(data))
                except (TypeError, ValueError):
                    logger.warning("events listener: undecodable log entry %s of %s", entry_id, queue)
                    continue
                if isinstance(message, dict):
                    message["log_id"] = entry_id
                    self._fire(message, queue)
                    count += 1
            if len(entries) < CATCH_UP_BATCH:
                break
        if count:
            self.caught_up += count
            logger.warning("events listener: %d event(s) of %s caught up from the events log", count, queue)

    def _check_gap(self, client: Any, queue: str, key: str, last: str) -> None:
        """Warn when the log no longer holds every event after ``last``."""
        seen = parse_log_id(last)
        if seen is None or seen == (0, 0):
            return
        try:
            info = client.xinfo_stream(key)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            logger.warning(
                "events listener: the events log of %s is gone (Redis restarted without its data?): "
                "events since the last one seen may have been missed",
                queue,
            )
            self._last[queue] = "0-0"
            return
        info = {_s(k): v for k, v in info.items()}
        newest = parse_log_id(info.get("last-generated-id"))
        if newest is not None and newest < seen:
            logger.warning(
                "events listener: the events log of %s was recreated (Redis lost its data?): "
                "events since the last one seen may have been missed",
                queue,
            )
            self._last[queue] = "0-0"
            return
        first = info.get("recorded-first-entry-id") or (info.get("first-entry") or [None])[0]
        oldest = parse_log_id(first) if first is not None else None
        if oldest is not None and oldest > seen:
            # The entry we saw last is gone, trimmed away by MAXLEN: the ones
            # between it and the oldest still held may have gone with it.
            logger.warning(
                "events listener: events of %s may have been missed: the events log was trimmed past "
                "the last event seen (%s)",
                queue,
                last,
            )


class ListenerThread(threading.Thread):
    """A daemon thread running an EventsListener; ``stop()`` ends it."""

    def __init__(self, listener: EventsListener) -> None:
        super().__init__(name="jobq-events", daemon=True)
        self.listener = listener

    def run(self) -> None:
        try:
            self.listener.run()
        except Exception:  # noqa: BLE001 - a dying thread must say why
            logger.exception("events listener thread failed")

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop the listener and wait for the thread; True once it has ended."""
        self.listener.stop()
        self.join(timeout)
        return not self.is_alive()


def start_listener_thread(queues: Sequence[str] | None = None, **options: Any) -> ListenerThread:
    """Start an events listener for ``queues`` (default: every configured
    queue) in a daemon thread and return it; call ``.stop()`` to end it."""
    thread = ListenerThread(EventsListener(queues, **options))
    thread.start()
    return thread
