"""Signals fired from the events channels, by a listener thread in this process,
for state changes made by other processes and clients; reconnection and catch-up
from the events log."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
import redis

from django_jobqueue import enqueue, signals
from django_jobqueue.conf import validate
from django_jobqueue.devserver import RedisServer
from django_jobqueue.engine.keys import QueueKeys
from django_jobqueue.events import EventsListener, parse_log_id, start_listener_thread
from django_jobqueue.queue import RedisJobQueue
from tests.helpers.paths import ROOT
from tests.helpers.waiting import wait_for
from tests.helpers.workers import listen_to_one_event, run_worker, worker_env

SPECIFIC = [
    "job_enqueued",
    "job_started",
    "job_completed",
    "job_retrying",
    "job_failed",
    "job_reclaimed",
    "job_requeued",
    "job_deleted",
    "job_expired",
]


class Recorder:
    """Connects to every signal and keeps what each one received."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.receivers = []
        for name in [*SPECIFIC, "job_event"]:

            def receiver(sender, _name=name, **kwargs):
                with self.lock:
                    self.calls.append((_name, sender, kwargs))

            getattr(signals, name).connect(receiver, weak=False)
            self.receivers.append((name, receiver))

    def disconnect(self) -> None:
        for name, receiver in self.receivers:
            getattr(signals, name).disconnect(receiver)

    def of(self, signal_name: str, job_id: str | None = None) -> list[dict]:
        with self.lock:
            return [k for n, _s, k in self.calls if n == signal_name and (job_id is None or k["job_id"] == job_id)]

    def events(self, job_id: str) -> list[str]:
        """The event names job_event saw for one job, in order."""
        return [k["event"]["event"] for k in self.of("job_event", job_id)]


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.disconnect()


@pytest.fixture
def listener():
    """A listener thread on every configured queue, subscribed before the test goes on."""
    thread = start_listener_thread()
    assert thread.listener.ready.wait(10), "listener did not subscribe"
    yield thread.listener
    assert thread.stop(timeout=10)


@pytest.fixture
def events_log(caplog):
    """The events logger's records, even when a command earlier in this process
    stopped the package logger from propagating to the root."""
    log = logging.getLogger("django_jobqueue.events")
    log.addHandler(caplog.handler)
    old = log.level
    log.setLevel(logging.INFO)
    yield caplog
    log.removeHandler(caplog.handler)
    log.setLevel(old)


def warnings_in(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ------------------------------------------------------------- the signals


def test_a_job_run_by_a_worker_process_fires_each_signal_here(redis_server, listener, recorder):
    ok = enqueue("add", {"a": 1, "b": 2})
    bad = enqueue("boom", {"message": "smtp timeout"})  # max_attempts=2: one retry, then failed
    done = run_worker(redis_server.url, "--burst")
    assert done.returncode == 0, done.stderr

    wait_for(lambda: recorder.of("job_completed", ok), what="job_completed")
    wait_for(lambda: recorder.of("job_failed", bad), what="job_failed")
    assert recorder.events(ok) == ["enqueued", "started", "completed"]
    assert recorder.events(bad) == ["enqueued", "started", "retrying", "started", "failed"]

    (completed,) = recorder.of("job_completed", ok)
    assert completed["result"] == {"sum": 3}
    assert (completed["queue"], completed["name"], completed["status"], completed["attempts"]) == (
        "jobs",
        "add",
        "completed",
        1,
    )
    assert completed["event"]["event"] == "completed" and completed["event"]["id"] == ok
    assert "error" not in completed

    (retrying,) = recorder.of("job_retrying", bad)
    assert retrying["error"] == "RuntimeError: smtp timeout" and retrying["status"] in ("pending", "scheduled")
    (failed,) = recorder.of("job_failed", bad)
    assert failed["error"] == "RuntimeError: smtp timeout" and failed["attempts"] == 2
    assert "result" not in failed
    assert len(recorder.of("job_started", bad)) == 2
    # The sender is the queue name; job_event sees every event, after the specific signal.
    assert {s for _n, s, _k in recorder.calls} == {"jobs"}
    assert len(recorder.of("job_event")) == len(recorder.calls) / 2


def test_events_from_another_client_map_onto_the_signals(r, redis_server, listener, recorder):
    """A second client drives the engine by hand (one queue per part, so the
    parts do not meet): requeue-like events fire job_requeued, a promotion
    fires job_event only."""
    other = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        q = RedisJobQueue(other, "fast")
        a = q.enqueue({}, name="x")
        q.requeue(q.claim(0), count_attempt=False, event="nacked", counter="nacks")
        q.requeue(q.claim(0), count_attempt=False, event="released", front=True)
        q.fail(q.claim(0), "no", terminal=True)
        q.retry(a)  # from the failed list: "requeued"

        high = RedisJobQueue(other, "high")
        b = high.enqueue({}, name="y", delay_ms=1)
        wait_for(lambda: high.sweep().promoted, what="the promotion")

        low = RedisJobQueue(other, "low", visibility_ms=1)
        c = low.enqueue({}, name="z")
        low.claim(0)
        wait_for(lambda: low.reclaim_stuck(), what="the lease to run out")

        jobs = RedisJobQueue(other, "jobs")
        d = jobs.enqueue({}, name="d", ttl_ms=1)
        wait_for(lambda: jobs.sweep().expired, what="the expiry")
        e = jobs.enqueue({}, name="e")
        jobs.delete(e)
    finally:
        other.close()
    wait_for(lambda: len(recorder.of("job_requeued", a)) == 3, what="job_requeued")
    wait_for(lambda: "promoted" in recorder.events(b), what="the promoted event")
    wait_for(lambda: recorder.of("job_reclaimed", c), what="job_reclaimed")
    wait_for(lambda: recorder.of("job_expired", d) and recorder.of("job_deleted", e), what="expired, deleted")

    requeued = recorder.of("job_requeued", a)
    assert [k["event"]["event"] for k in requeued] == ["nacked", "released", "requeued"]
    assert all(k["queue"] == "fast" and k["name"] == "x" for k in requeued)
    assert recorder.events(b) == ["enqueued", "promoted"]
    # A promotion is not a new job: job_enqueued fired once, when it was added.
    assert len(recorder.of("job_enqueued", b)) == 1
    assert recorder.of("job_reclaimed", c)[0]["status"] == "pending"
    assert recorder.of("job_expired", d)[0]["status"] == "expired"
    assert recorder.of("job_deleted", e)[0]["status"] == "deleted"
    senders = {(s, k["job_id"]) for _n, s, k in recorder.calls}
    assert {("fast", a), ("high", b), ("low", c), ("jobs", d), ("jobs", e)} <= senders


def test_a_receiver_that_raises_is_logged_and_the_others_still_run(listener, recorder, events_log):
    def broken(sender, **kwargs):
        raise ValueError("receiver bug")

    signals.job_enqueued.connect(broken, weak=False)
    try:
        job_id = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: recorder.of("job_event", job_id), what="job_event")
    finally:
        signals.job_enqueued.disconnect(broken)
    assert recorder.of("job_enqueued", job_id)
    errors = [r for r in events_log.records if r.levelno == logging.ERROR and "raised" in r.getMessage()]
    assert errors and errors[0].exc_info[0] is ValueError
    wait_for(lambda: listener.fired >= 1, what="the listener to count the event it fired")


def test_garbage_on_the_channel_is_logged_and_skipped(r, listener, recorder, events_log):
    r.publish("queue:jobs:events", "not json")
    r.publish("queue:jobs:events", json.dumps([1, 2]))
    job_id = enqueue("add", {"a": 1, "b": 1})
    wait_for(lambda: recorder.of("job_enqueued", job_id), what="the next good event")
    assert "undecodable message" in warnings_in(events_log)
    assert "unexpected message" in warnings_in(events_log)


def announce_a_listener(r, queue="jobs"):
    """What a listener does on connecting: ask the scripts to keep the events log."""
    r.set(QueueKeys("queue", queue).events_listening, "1", ex=600)


def test_the_events_log_is_kept_only_while_a_listener_has_announced_itself(r):
    queue = RedisJobQueue(r, "jobs")
    queue.enqueue({})
    assert r.xlen("queue:jobs:events:log") == 0  # nobody would catch up from it
    thread = start_listener_thread(["jobs"])
    try:
        assert thread.listener.ready.wait(10)
        assert 0 < r.ttl("queue:jobs:events:listening") <= 600
        queue.enqueue({})
        assert r.xlen("queue:jobs:events:log") == 1
    finally:
        assert thread.stop(timeout=10)


def test_the_published_message_names_its_events_log_entry(r):
    announce_a_listener(r)
    pubsub = r.pubsub()
    pubsub.subscribe("queue:jobs:events")
    wait_for(lambda: pubsub.get_message(timeout=1), what="subscribed")
    job_id = enqueue("add", {"a": 1, "b": 1})
    message = wait_for(lambda: pubsub.get_message(timeout=1), what="the event")
    pubsub.close()
    event = json.loads(message["data"])
    ((entry_id, fields),) = r.xrange(QueueKeys("queue", "jobs").events_log)
    assert event["log_id"] == entry_id and event["id"] == job_id
    assert json.loads(fields["data"]) == {k: v for k, v in event.items() if k != "log_id"}


def test_a_pattern_subscriber_receives_the_events_of_a_job(r):
    """A monitor subscribed with PSUBSCRIBE to every queue's channel, and no
    exact subscriber and no listener anywhere: the scripts publish for it too."""
    pubsub = r.pubsub()
    pubsub.psubscribe("queue:*:events")
    assert wait_for(lambda: pubsub.get_message(timeout=1), what="subscribed")["type"] == "psubscribe"
    assert r.pubsub_numsub("queue:jobs:events") == [("queue:jobs:events", 0)]
    queue = RedisJobQueue(r, "jobs")
    job_id = queue.enqueue({"n": 1}, name="add")
    claimed = queue.claim(0)
    assert claimed is not None and queue.complete(claimed, {"ok": True})
    received = []
    while len(received) < 3 and (message := pubsub.get_message(timeout=2)) is not None:
        received.append(message)
    pubsub.close()
    assert {(m["type"], m["pattern"], m["channel"]) for m in received} == {
        ("pmessage", "queue:*:events", "queue:jobs:events")
    }
    events = [json.loads(m["data"]) for m in received]
    assert [(e["event"], e["id"], e["name"]) for e in events] == [
        ("enqueued", job_id, "add"),
        ("started", job_id, "add"),
        ("completed", job_id, "add"),
    ]
    assert events[2]["result"] == {"ok": True}


def test_the_events_log_is_capped(r):
    announce_a_listener(r)
    RedisJobQueue(r, "jobs").enqueue_many([{}] * 12_000)
    assert 10_000 <= r.xlen("queue:jobs:events:log") < 11_000


def test_a_log_that_cannot_be_written_never_fails_the_state_change(r):
    announce_a_listener(r)
    r.set("queue:jobs:events:log", "a string, not a stream")
    job_id = RedisJobQueue(r, "jobs").enqueue({})
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


def assert_a_live_event_fires(recorder, **listener_options):
    """Start a listener, enqueue a job, and see its enqueued signal fire."""
    thread = start_listener_thread(["jobs"], **listener_options)
    try:
        assert thread.listener.ready.wait(10)
        job_id = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: recorder.of("job_enqueued", job_id), what="the live event")
    finally:
        assert thread.stop(timeout=10)


def test_an_unreadable_events_log_leaves_the_channel_working(r, recorder, events_log):
    r.set("queue:jobs:events:log", "a string, not a stream")
    assert_a_live_event_fires(recorder)
    assert "events log of jobs cannot be read" in warnings_in(events_log)


def test_the_worker_setting_is_validated():
    assert validate({"WORKER_EVENTS_LISTENER": True})[0].worker_events_listener is True
    assert validate({})[0].worker_events_listener is False
    (problem,) = validate({"WORKER_EVENTS_LISTENER": "yes"})[1]
    assert problem[0] == "JOBQUEUE['WORKER_EVENTS_LISTENER']"


def test_parse_log_id_orders_entries():
    assert parse_log_id("5-10") > parse_log_id("5-9") > parse_log_id("4-99")
    assert parse_log_id(b"7-0") == (7, 0) and parse_log_id("nope") is None


# ------------------------------------------------------- disconnects


class CuttableProxy:
    """A loopback TCP proxy to Redis that can cut every connection and refuse
    new ones until healed: a network partition between one client and Redis."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.refusing = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self.server.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.refusing.set()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def heal(self) -> None:
        self.refusing.clear()

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_events_published_while_cut_off_are_caught_up_from_the_log_once_each(r, redis_server, recorder, events_log):
    proxy = CuttableProxy(redis_server.port)
    client = redis.Redis(port=proxy.port, decode_responses=True, socket_connect_timeout=1, socket_timeout=5)
    thread = start_listener_thread(client=client, reconnect_max_seconds=0.5)
    try:
        assert thread.listener.ready.wait(10)
        before = enqueue("add", {"a": 0, "b": 0})
        wait_for(lambda: recorder.of("job_enqueued", before), what="the live event")

        proxy.cut()
        # Published while the listener cannot reach Redis: pub/sub drops these.
        missed = [enqueue("add", {"a": n, "b": 0}) for n in range(5)]
        wait_for(lambda: "lost Redis" in warnings_in(events_log), what="the disconnect warning")
        proxy.heal()

        wait_for(lambda: all(recorder.of("job_enqueued", i) for i in missed), what="caught-up events")
        after = [enqueue("add", {"a": n, "b": 1}) for n in range(3)]
        wait_for(lambda: all(recorder.of("job_enqueued", i) for i in after), what="live events again")
    finally:
        assert thread.stop(timeout=10)
        client.close()
        proxy.close()

    fired = Counter(k["job_id"] for k in recorder.of("job_enqueued"))
    assert all(fired[i] == 1 for i in [before, *missed, *after]), fired
    assert thread.listener.caught_up >= len(missed)
    text = warnings_in(events_log)
    assert "not delivered by pub/sub (it does not buffer)" in text
    assert "caught up from the events log" in text
    assert "may have been missed" not in text  # the log held every one of them


def test_a_gap_longer_than_the_log_is_reported(r, redis_server, recorder, events_log):
    proxy = CuttableProxy(redis_server.port)
    client = redis.Redis(port=proxy.port, decode_responses=True, socket_connect_timeout=1, socket_timeout=5)
    thread = start_listener_thread(["low"], client=client, reconnect_max_seconds=0.5)
    try:
        assert thread.listener.ready.wait(10)
        first = enqueue("add", {"a": 0, "b": 0}, queue="low")
        wait_for(lambda: recorder.of("job_enqueued", first), what="the live event")
        proxy.cut()
        RedisJobQueue(r, "low").enqueue_many([{}] * 11_000, name="add")
        proxy.heal()
        wait_for(lambda: "trimmed past the last event seen" in warnings_in(events_log), what="the gap warning")
        wait_for(lambda: thread.listener.caught_up >= 10_000, what="what the log still held")
    finally:
        assert thread.stop(timeout=10)
        client.close()
        proxy.close()


def test_redis_restarted_under_the_listener(recorder, events_log):
    """Killed and restarted (AOF on): the listener warns, reconnects with
    backoff, and every event after the restart fires exactly once."""
    server = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
    client = redis.Redis(port=server.port, decode_responses=True, socket_connect_timeout=1, socket_timeout=5)
    writer = redis.Redis(port=server.port, decode_responses=True)
    q = RedisJobQueue(writer, "jobs")
    thread = start_listener_thread(["jobs"], client=client, reconnect_max_seconds=0.5)
    try:
        assert thread.listener.ready.wait(10)
        first = q.enqueue({}, name="add")
        wait_for(lambda: recorder.of("job_enqueued", first), what="before the restart")
        server.restart(kill=True)
        later = [q.enqueue({}, name="add") for _ in range(3)]
        wait_for(lambda: all(recorder.of("job_enqueued", i) for i in later), timeout=30, what="after the restart")
    finally:
        assert thread.stop(timeout=10)
        client.close()
        writer.close()
        server.cleanup()
    fired = Counter(k["job_id"] for k in recorder.of("job_enqueued"))
    assert all(fired[i] == 1 for i in [first, *later]), fired
    assert "pub/sub" in warnings_in(events_log)


def test_redis_restarted_without_its_data_says_events_may_be_lost(recorder, events_log):
    server = RedisServer().start()  # no AOF, no RDB: a restart forgets everything
    client = redis.Redis(port=server.port, decode_responses=True, socket_connect_timeout=1, socket_timeout=5)
    writer = redis.Redis(port=server.port, decode_responses=True)
    thread = start_listener_thread(["jobs"], client=client, reconnect_max_seconds=0.5)
    try:
        assert thread.listener.ready.wait(10)
        first = RedisJobQueue(writer, "jobs").enqueue({}, name="add")
        wait_for(lambda: recorder.of("job_enqueued", first), what="before the restart")
        server.restart(kill=True)
        wait_for(lambda: "may have been missed" in warnings_in(events_log), timeout=30, what="the data-loss warning")
        after = RedisJobQueue(writer, "jobs").enqueue({}, name="add")
        wait_for(lambda: recorder.of("job_enqueued", after), what="after the restart")
    finally:
        assert thread.stop(timeout=10)
        client.close()
        writer.close()
        server.cleanup()
    assert "events log of jobs is gone" in warnings_in(events_log)


def test_without_catch_up_only_live_events_fire(r, redis_server, recorder):
    listener = EventsListener(["jobs"], catch_up=False)
    thread = threading.Thread(target=listener.run, daemon=True)
    RedisJobQueue(r, "jobs").enqueue({}, name="old")  # before the listener: never fired
    thread.start()
    try:
        assert listener.ready.wait(10)
        job_id = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: recorder.of("job_enqueued", job_id), what="the live event")
    finally:
        listener.stop()
        thread.join(10)
    assert [k["job_id"] for k in recorder.of("job_enqueued")] == [job_id]


# ------------------------------------------------------------- the command


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_jobq_events_fires_in_the_foreground_and_exits_0_on_a_signal(redis_server, tmp_path, sig):
    _job_id, text = listen_to_one_event(redis_server.url, tmp_path / "events.log", sig=sig)
    assert "events listener stopped: 1 events fired" in text and "Traceback" not in text


def test_jobq_events_rejects_an_unknown_queue(redis_server):
    done = subprocess.run(
        [sys.executable, "-m", "django", "jobq_events", "--queue", "nope"],
        env=worker_env(redis_server.url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "unknown queue 'nope'" in done.stderr


def test_a_listener_that_may_not_ask_for_the_log_still_fires_live_events(redis_server, r, recorder, events_log):
    # An ACL user for the listener that may run every command but SET.
    import redis as redis_py

    r.execute_command("ACL", "SETUSER", "listener", "on", ">listener-secret", "~*", "&*", "+@all", "-set")
    limited = redis_py.Redis(
        host="127.0.0.1", port=redis_server.port, username="listener", password="listener-secret", decode_responses=True
    )
    try:
        assert_a_live_event_fires(recorder, client=limited)
    finally:
        limited.close()
        r.execute_command("ACL", "DELUSER", "listener")
    assert "cannot ask for the events log of jobs" in warnings_in(events_log)
