"""A worker's presence: the heartbeat keeps beating whatever else the worker
does, and workers that look alike (same hostname, same pid, same id) never
take each other's jobs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from django_jobqueue import enqueue
from django_jobqueue.api import get_queue
from django_jobqueue.engine.keys import GlobalKeys
from django_jobqueue.worker.presence import Presence, WorkerIdInUse
from django_jobqueue.worker.worker import Worker, default_worker_id
from tests.helpers.paths import ROOT
from tests.helpers.redis_data import job_status
from tests.helpers.waiting import wait_for
from tests.helpers.workers import worker_env

KEYS = GlobalKeys("queue", False)


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def live_record(r, wid: str, pid: int, host: str | None = None) -> None:
    """A record as another live worker keeps it: its beat is fresh."""
    r.hset(
        KEYS.worker(wid),
        mapping={"id": wid, "host": host or socket.gethostname(), "pid": str(pid), "queues": '["jobs"]'},
    )
    seconds, micros = r.time()
    r.zadd(KEYS.workers, {wid: seconds * 1000 + micros // 1000})


def in_thread(worker: Worker) -> threading.Thread:
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------- the heartbeat


def test_a_slow_exhausted_hook_never_stops_the_heartbeat(r):
    # The sweep dead-letters a job whose last attempt died with its worker and
    # calls its hook, which takes 3 s (twice WORKER_TIMEOUT_SECONDS here).
    job_id = enqueue("slow_hook", {})
    claimed = get_queue("fast").claim_nowait("dead-worker")
    assert claimed.id == job_id
    time.sleep(1.3)  # the fast queue's lease (1.2 s) runs out
    worker = Worker(["fast"], concurrency=1)
    thread = in_thread(worker)
    try:
        wait_for(lambda: job_status(r, job_id, "fast") == "failed", what="the sweep to dead-letter the job")
        beats, hook_done = [], None
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and hook_done is None:
            beats.append((time.monotonic(), r.zscore(KEYS.workers, worker.worker_id)))
            if r.lrange("test:exhausted", 0, -1) == [job_id]:
                hook_done = time.monotonic()
            time.sleep(0.05)
        assert hook_done is not None, "the hook ran"
        changes = [t for (t, s), (_t0, s0) in zip(beats[1:], beats, strict=False) if s != s0]
        gaps = [b - a for a, b in zip([beats[0][0], *changes], [*changes, hook_done], strict=True)]
        # HEARTBEAT_SECONDS is 0.2; another worker takes it for lost after 1.5 s.
        assert max(gaps) < 1.0, gaps
    finally:
        worker.stop()
        thread.join(15)


# ---------------------------------------------------------- look-alike workers


def test_default_worker_ids_differ_between_processes_with_the_same_host_and_pid():
    assert default_worker_id() != default_worker_id()
    host, pid, _random = default_worker_id().rsplit(".", 2)
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())


def test_a_live_worker_of_this_host_whose_pid_is_not_ours_is_not_taken_for_our_earlier_self(r):
    # Another container with host networking: same hostname, a pid that does
    # not exist in our pid namespace, and a fresh heartbeat.
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert q.claim_nowait("twin").id == job_id
    live_record(r, "twin", a_dead_pid())
    Presence("me", [q], 1, lambda: "[]").register()
    assert job_status(r, job_id) == "processing"
    assert r.zscore(KEYS.workers, "twin") is not None


def test_a_lapsed_record_of_this_host_with_a_dead_pid_is_our_earlier_self(r):
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert q.claim_nowait("old-me").id == job_id
    live_record(r, "old-me", a_dead_pid())
    r.zadd(KEYS.workers, {"old-me": 0})  # its last beat: long ago
    Presence("me", [q], 1, lambda: "[]").register()
    assert job_status(r, job_id) == "pending"
    assert r.zscore(KEYS.workers, "old-me") is None


def test_our_own_id_with_a_dead_pid_of_this_host_is_a_restart_taken_at_once(r):
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert q.claim_nowait("w1").id == job_id
    live_record(r, "w1", a_dead_pid())  # beat a moment ago, then the process died
    started = time.monotonic()
    Presence("w1", [q], 1, lambda: "[]").register()
    assert time.monotonic() - started < 1.0  # no wait for a lapse
    assert job_status(r, job_id) == "pending"


def test_a_second_live_worker_with_our_id_is_refused_and_its_jobs_left_alone(r):
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert q.claim_nowait("w1").id == job_id
    live_record(r, "w1", os.getpid())  # in another container: pid 1 there, our pid here
    stop = threading.Event()

    def keep_beating():
        while not stop.wait(0.1):
            seconds, micros = r.time()
            r.zadd(KEYS.workers, {"w1": seconds * 1000 + micros // 1000})

    beater = threading.Thread(target=keep_beating, daemon=True)
    beater.start()
    try:
        with pytest.raises(WorkerIdInUse, match="w1"):
            Presence("w1", [q], 1, lambda: "[]").register()
    finally:
        stop.set()
        beater.join()
    assert job_status(r, job_id) == "processing"


def test_our_own_id_whose_old_process_stops_beating_is_taken_once_it_lapses(r):
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert q.claim_nowait("w1").id == job_id
    live_record(r, "w1", os.getpid(), host="another-host")  # restarted on another machine
    Presence("w1", [q], 1, lambda: "[]").register()  # waits out WORKER_TIMEOUT_SECONDS
    assert job_status(r, job_id) == "pending"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (pid namespaces)")
def test_two_workers_with_the_same_hostname_each_pid_1_in_its_own_namespace_share_nothing(r, redis_server):
    # Two real jobq_worker processes, each pid 1 of its own pid namespace (as
    # two containers with host networking): each runs its own jobs, and
    # neither takes the other's for its earlier self.
    ids = [enqueue("sleepy", {"seconds": 0.3}) for _ in range(12)]
    env = worker_env(redis_server.url)
    cmd = ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "django", "jobq_worker"]
    procs = [
        subprocess.Popen([*cmd, "--concurrency", "2"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        wait_for(lambda: r.zcard(KEYS.workers) == 2, what="two workers registered")
        pids = {r.hget(KEYS.worker(w), "pid") for w in r.zrange(KEYS.workers, 0, -1)}
        assert pids == {"1"}
        wait_for(lambda: all(job_status(r, i) == "completed" for i in ids), timeout=30, what="every job to complete")
        from tests.testapp.jobs import runs

        starts = runs(r, tag="start")
        assert sorted(e.split(":")[0] for e in starts) == sorted(ids)  # each ran once
    finally:
        logs = []
        for p in procs:
            # unshare passes no signal on: the worker (its child) gets SIGTERM itself.
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                children = f.read().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            _out, err = p.communicate(timeout=30)
            logs.append(err)
    assert not any("back to pending" in log for log in logs), logs


def test_a_lost_workers_job_on_its_last_attempt_gets_its_exhausted_hook(r):
    # The reclaim of a lost worker's jobs dead-letters a started job whose
    # attempts are used up: its hook runs (on the hooks thread), as it does
    # when a lease runs out.
    job_id = enqueue("flaky", {}, max_attempts=1)
    assert get_queue("fast").claim_nowait("gone").id == job_id
    r.hset(KEYS.worker("gone"), mapping={"id": "gone", "queues": '["fast"]'})
    r.zadd(KEYS.workers, {"gone": 0})  # its last beat: long ago
    sweeper = Worker(["fast"], burst=True)
    sweeper._presence.register()
    sweeper._presence._steady_since -= 10  # its own beats steady for long
    sweeper._presence.reclaim_lapsed()
    assert job_status(r, job_id, "fast") == "failed"
    wait_for(lambda: r.lrange("test:exhausted", 0, -1) == [job_id], what="the hook")


def test_a_slow_hook_of_a_job_that_failed_in_a_runner_holds_up_neither_the_runner_nor_its_lease(r, caplog):
    first = enqueue("slow_hook", {})
    second = enqueue("add", {"a": 1, "b": 1}, queue="fast")
    worker = Worker(["fast"], concurrency=1)
    thread = in_thread(worker)
    try:
        # The hook sleeps 3 s; the next job runs meanwhile on the same runner.
        wait_for(lambda: job_status(r, second, "fast") == "completed", timeout=2.5, what="the next job")
        assert r.lrange("test:exhausted", 0, -1) == []
        wait_for(lambda: r.lrange("test:exhausted", 0, -1) == [first], what="the hook")
    finally:
        worker.stop()
        thread.join(15)
    assert "lease lost" not in caplog.text


def test_the_sweep_calls_the_exhausted_hook_only_when_attempts_are_exhausted(r):
    # A runner calls on_max_attempts_exhausted only when job.attempts >= max_attempts
    # (worker._after_fail); the sweep calls it for every dead-lettered id: here an
    # at-most-once job "lost" on its first attempt of 3.
    q = get_queue("fast")
    job_id = enqueue("flaky", {}, delivery="at-most-once")  # max_attempts=3
    claimed = q.claim_nowait("dead-worker")  # lease 1.2 s; no worker record (found by its lease)
    assert claimed.attempts == 1
    time.sleep(1.3)
    worker = Worker(["fast"], concurrency=1)
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    try:
        wait_for(lambda: r.hget(q.keys.job(job_id), "status") == "lost", what="the job lost")
        time.sleep(0.5)
        assert r.lrange("test:exhausted", 0, -1) == []  # attempt 1 of 3: not exhausted
    finally:
        worker.stop()
        t.join(15)


def test_registering_again_after_a_lost_reply_does_not_take_our_own_record_for_another_worker():
    # What Worker.redis_health.with_redis(upkeep.startup) does when register()'s beat ran in
    # Redis but its reply never came back (a socket timeout, a dropped connection).
    p = Presence("w1", [get_queue("jobs")], 1, lambda: "[]")
    p.register()
    began = time.monotonic()
    p.register()  # its own record (our boot id, our pid) is not another worker's
    assert time.monotonic() - began < 1.0  # it waited for its own record to lapse (1.5 s here)


def test_a_worker_whose_first_beat_reply_was_lost_starts(monkeypatch):
    worker = Worker(["jobs"], concurrency=1, worker_id="w1")
    real_beat = Presence.beat
    calls = []

    def beat_then_lose_reply(self, *, stopping):
        real_beat(self, stopping=stopping)  # the heartbeat script ran in Redis...
        calls.append(1)
        if len(calls) == 1:
            raise RedisConnectionError("Connection closed by server.")  # ...its reply was lost

    monkeypatch.setattr(Presence, "beat", beat_then_lose_reply)
    began = time.monotonic()
    worker.redis_health.with_redis(worker.upkeep.startup, "registering the worker")  # as Worker.run() does
    assert time.monotonic() - began < 1.0
    assert len(calls) == 2
