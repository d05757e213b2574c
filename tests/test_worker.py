"""The worker: in-process for the job semantics, real processes for crashes and signals."""

from __future__ import annotations

import contextlib
import json
import signal
import time

import pytest

from django_jobqueue import enqueue, get_queue
from django_jobqueue.worker.worker import SAME_SIGNAL_S, Worker
from tests.helpers.redis_data import job_hash
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain, driven_fetcher, run_worker, start_worker, stop
from tests.testapp.jobs import runs

# ---------------------------------------------------------------- in process


def test_burst_runs_jobs_and_stores_results(r):
    ids = [enqueue("add", {"a": n, "b": 1}) for n in range(10)]
    worker = drain()
    assert worker.stats.completed == 10
    for n, job_id in enumerate(ids):
        h = job_hash(r, job_id)
        assert h["status"] == "completed"
        assert json.loads(h["result"]) == {"sum": n + 1}
    assert r.llen("queue:jobs:processing") == 0


def test_raising_retries_then_dead_letters_with_traceback(r):
    job_id = enqueue("boom", {"message": "smtp timeout"})
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == "failed" and h["attempts"] == "2"
    assert h["last_error"] == "RuntimeError: smtp timeout"
    assert "Traceback" in h["last_traceback"] and "smtp timeout" in h["last_traceback"]
    assert len(runs(r, job_id)) == 2


def test_max_attempts_hook_is_called_once(r):
    job_id = enqueue("flaky", {})
    drain("fast")
    assert job_hash(r, job_id, "fast")["status"] == "failed"
    assert r.lrange("test:exhausted", 0, -1) == [job_id]
    assert len(runs(r, job_id)) == 3


def test_a_job_that_succeeds_on_a_retry(r):
    job_id = enqueue("flaky", {"fail_times": 1})
    drain("fast")
    h = job_hash(r, job_id, "fast")
    assert h["status"] == "completed" and h["result"] == "2"
    assert r.llen("test:exhausted") == 0


@pytest.mark.parametrize(
    "action, status, result",
    [
        ("completed", "completed", {"explicit": True}),
        ("requeue", "completed", "second time"),
        ("nack", "completed", "after nack"),
    ],
)
def test_explicit_calls_on_the_job_object(r, action, status, result):
    job_id = enqueue("explicit", {"do": action})
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == status
    assert json.loads(h["result"]) == result


def test_nack_is_counted_apart_from_attempts(r):
    job_id = enqueue("explicit", {"do": "nack"})
    drain()
    h = job_hash(r, job_id)
    assert (h["nacks"], h["attempts"]) == ("1", "1")


def test_explicit_failed_and_delete(r):
    failed = enqueue("explicit", {"do": "failed"})
    deleted = enqueue("explicit", {"do": "delete"})
    drain()
    assert job_hash(r, failed)["last_error"] == "told to fail"
    assert not r.exists(f"queue:jobs:job:{deleted}")


def test_okay_to_run_defers_without_using_an_attempt(r):
    job_id = enqueue("deferred", {})
    drain()  # first look: not okay; the job waits 0.3 s in the scheduled set
    assert job_hash(r, job_id)["status"] == "scheduled"
    assert runs(r, job_id) == []
    time.sleep(0.35)
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == "completed"
    assert h["result"] == "1"  # the deferral did not use up an attempt


def test_requeue_on_failure_comes_back_ten_seconds_later_by_default():
    from django_jobqueue.registry import get_definition

    assert get_definition("boom").requeue_on_failure is False
    from django_jobqueue.registry import _build

    definition = _build(lambda p, j: None, name="x", requeue_on_failure=True)
    assert definition.requeue_delay_seconds == 10.0


def test_requeue_on_failure_waits_its_delay_in_the_scheduled_set(r):
    job_id = enqueue("requeue_on_failure", {})
    started = time.time()
    drain("fast")
    due = r.zscore("queue:fast:scheduled", job_id)
    assert due is not None and 0.3 < due / 1000 - started < 1.5
    wait_for(lambda: time.time() * 1000 >= due + 20, what="the retry to be due")
    drain("fast")
    assert job_hash(r, job_id, "fast")["status"] == "failed"
    assert len(runs(r, job_id)) == 2


def test_unknown_job_name_in_redis_is_dead_lettered_never_imported(r):
    queue = get_queue()
    job_id = queue.enqueue({"cmd": "echo pwned"}, name="os.system")
    good = enqueue("add", {"a": 1, "b": 1})
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == "failed" and "unknown job name 'os.system'" in h["last_error"]
    assert job_hash(r, good)["status"] == "completed"


def test_undecodable_payload_is_dead_lettered_and_the_worker_goes_on(r):
    bad = enqueue("add", {"a": 1, "b": 2})
    r.hset(f"queue:jobs:job:{bad}", "payload", "{not json")
    good = enqueue("add", {"a": 1, "b": 2})
    drain()
    assert "payload cannot be decoded" in job_hash(r, bad)["last_error"]
    assert job_hash(r, good)["status"] == "completed"


def test_a_result_that_is_not_json_fails_the_job(r):
    job_id = enqueue("bad_result", {}, max_attempts=1)
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == "failed" and "not JSON-encodable" in h["last_error"]


def test_system_exit_in_a_handler_fails_the_job_not_the_worker(r):
    job_id = enqueue("exits", {}, max_attempts=1)
    after = enqueue("add", {"a": 0, "b": 0})
    drain()
    assert job_hash(r, job_id)["last_error"] == "SystemExit: 3"
    assert job_hash(r, after)["status"] == "completed"


def test_hash_deleted_under_a_running_job_is_skipped(r):
    job_id = enqueue("sleepy", {"seconds": 0.5})
    worker = Worker(["jobs"], burst=True)
    import threading

    t = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    t.start()
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    r.delete(f"queue:jobs:job:{job_id}")
    t.join(10)
    assert not t.is_alive()
    assert r.llen("queue:jobs:processing") == 1 or r.llen("queue:jobs:processing") == 0
    # The late complete found no job: nothing was resurrected.
    assert not r.exists(f"queue:jobs:job:{job_id}")


def test_strict_priority_across_queues(r):
    low = [enqueue("add", {"a": 0, "b": n}, queue="low") for n in range(3)]
    high = [enqueue("add", {"a": 1, "b": n}, queue="high") for n in range(3)]
    drain("high", "low", concurrency=1)
    order = [e.split(":")[0] for e in runs(r)]
    assert order == high + low


def test_max_jobs_stops_the_worker(r):
    for n in range(5):
        enqueue("add", {"a": n, "b": 0})
    worker = Worker(["jobs"], concurrency=1, max_jobs=3)
    assert worker.run(install_signals=False) == 0
    assert worker.stats.processed == 3
    assert r.llen("queue:jobs:pending") == 2


def test_a_flush_at_shutdown_waits_for_completions_another_thread_is_sending(r, monkeypatch):
    # The maintenance thread's backstop flush may hold a completion on its way
    # when the worker shuts down: the shutdown's flush waits for it, or the
    # job would be handed back as unfinished, its completion refused, and run
    # again.
    import threading

    from django_jobqueue.engine import scripts
    from django_jobqueue.worker.fetcher import Ack

    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 0})
    fetcher = driven_fetcher(q)
    (_q, claimed), _empty = fetcher.next_job(eager=True)
    fetcher.ack(Ack(q, claimed, "1", True))
    real = scripts.run_pipeline
    sending = threading.Event()

    def slow_send(client, calls, **kwargs):
        sending.set()
        time.sleep(0.3)
        return real(client, calls, **kwargs)

    monkeypatch.setattr(scripts, "run_pipeline", slow_send)
    backstop = threading.Thread(target=fetcher.flush)
    backstop.start()
    assert sending.wait(5)
    fetcher.flush(wait_s=5)
    assert job_hash(r, job_id)["status"] == "completed"  # recorded before the shutdown goes on
    backstop.join(5)


def test_a_worker_with_max_jobs_claims_no_more_than_it_will_run(r):
    # Short jobs make claims of up to 32; a worker about to stop must not
    # take jobs only to hand them back.
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(40)]
    worker = Worker(["jobs"], concurrency=2, max_jobs=10)
    assert worker.run(install_signals=False) == 0
    assert worker.stats.processed == 10
    hashes = [job_hash(r, i) for i in ids]
    assert sum(h["status"] == "completed" for h in hashes) == 10
    assert all("releases" not in h for h in hashes), [h for h in hashes if "releases" in h]


def test_worker_registers_with_a_heartbeat_and_leaves_on_exit(r):
    import threading

    worker = Worker(["jobs"], worker_id="w-test")
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    t.start()
    wait_for(lambda: r.zscore("queue:workers", "w-test"), what="registration")
    info = r.hgetall("queue:worker:w-test")
    assert json.loads(info["queues"]) == ["jobs"] and info["state"] == "running"
    worker.stop()
    t.join(10)
    assert r.zscore("queue:workers", "w-test") is None and not r.exists("queue:worker:w-test")


def test_no_heartbeat_puts_the_record_back_after_the_worker_removed_it(r):
    # The maintenance thread beats while the worker shuts down (the record
    # says "stopping"); a beat after the removal would leave a record of a
    # worker that is gone. Here the removal is followed by three heartbeat
    # intervals before the worker's run ends.
    import threading

    worker = Worker(["jobs"], worker_id="w-test")
    remove = worker._presence.deregister

    def remove_then_linger():
        remove()
        time.sleep(3 * worker.settings.heartbeat_seconds)

    worker._presence.deregister = remove_then_linger
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    t.start()
    wait_for(lambda: r.zscore("queue:workers", "w-test"), what="registration")
    worker.stop()
    t.join(15)
    assert not t.is_alive()
    assert r.zscore("queue:workers", "w-test") is None and not r.exists("queue:worker:w-test")


def test_run_on_startup_starts_a_worker_with_the_first_request(r, jobq_settings, client):
    from django_jobqueue import autostart

    jobq_settings(QUEUES={"jobs": {"RUN_ON_STARTUP": True}})
    job_id = enqueue("add", {"a": 2, "b": 3})
    try:
        client.get("/admin/login/")
        wait_for(lambda: job_hash(r, job_id).get("status") == "completed", what="the in-process worker")
    finally:
        autostart.stop()
    assert json.loads(job_hash(r, job_id)["result"]) == {"sum": 5}


def _a_lapsed_worker_holding_a_job(r):
    """A worker "other-worker" whose last beat is long past, holding a job
    (returned, as it claimed it)."""
    from django_jobqueue.engine.keys import GlobalKeys

    enqueue("add", {"a": 1, "b": 1})
    theirs = get_queue("jobs").claim_nowait("other-worker")
    keys = GlobalKeys("queue", False)
    r.hset(keys.worker("other-worker"), mapping={"id": "other-worker", "queues": '["jobs"]'})
    r.zadd(keys.workers, {"other-worker": 0})
    return theirs


def test_no_worker_is_taken_for_lost_while_redis_is_down_or_just_back(r):
    # A failover stops every worker's heartbeat for a while: a worker that
    # sweeps meanwhile, or right after, must not take the others for lost
    # (their jobs would run twice). Once the others had time to beat, it may.
    theirs = _a_lapsed_worker_holding_a_job(r)
    sweeper = Worker(["jobs"], burst=True)
    sweeper._presence.register()  # beats once
    sweeper._presence._steady_since -= 10  # as if it had beaten steadily for long

    sweeper.redis_health.down_since = time.monotonic()  # as the worker sees an outage
    sweeper.upkeep.sweep()
    assert job_hash(r, theirs.id)["status"] == "processing"
    sweeper.redis_health.down_since, sweeper.redis_health.back_at = None, time.monotonic()  # just back
    sweeper.upkeep.last_sweep = 0
    sweeper.upkeep.sweep()
    assert job_hash(r, theirs.id)["status"] == "processing"

    sweeper.redis_health.back_at = float("-inf")  # back long ago: the lapse is real
    sweeper.upkeep.last_sweep = 0
    sweeper.upkeep.sweep()
    assert job_hash(r, theirs.id)["status"] == "pending"


def test_a_worker_whose_own_beats_were_not_steady_takes_no_other_for_lost(r):
    # The registry away (its cluster node failed over) stops every worker's
    # beats alike: a sweeper whose own beats only just reach it again cannot
    # tell a lost worker from one that could not beat either.
    theirs = _a_lapsed_worker_holding_a_job(r)
    sweeper = Worker(["jobs"], burst=True)
    sweeper._presence.register()  # our first beat (or the first after an outage): not steady yet
    sweeper.upkeep.sweep()
    assert job_hash(r, theirs.id)["status"] == "processing"
    assert r.zscore("queue:workers", "other-worker") == 0

    sweeper._presence._steady_since -= 1.6  # beating steadily for a worker timeout (1.5 s here)
    sweeper.upkeep.last_sweep = 0
    sweeper.upkeep.sweep()
    assert job_hash(r, theirs.id)["status"] == "pending"


def test_max_attempts_hook_is_called_when_the_last_attempt_died_with_its_worker(r):
    job_id = enqueue("flaky", {}, max_attempts=1)
    queue = get_queue("fast")
    claimed = queue.claim_nowait("dead-worker")
    assert claimed.id == job_id
    time.sleep(1.3)  # the fast queue's lease is 1.2 s
    worker = Worker(["fast"], burst=True)
    worker.upkeep.sweep()
    assert job_hash(r, job_id, "fast")["status"] == "failed"
    # The hook runs on the hooks thread, not on the sweeping one.
    wait_for(lambda: r.lrange("test:exhausted", 0, -1) == [job_id], what="the hook")


# ---------------------------------------------------------- real processes


def test_jobq_worker_burst_drains_and_prints_a_summary(r, redis_server):
    ids = [enqueue("add", {"a": n, "b": n}) for n in range(20)]
    done = run_worker(redis_server.url, "--burst", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert "burst: 20 jobs run (20 completed, 0 failed" in done.stdout
    assert all(job_hash(r, i)["status"] == "completed" for i in ids)
    assert "worker" in done.stderr and "starting: queues jobs, concurrency 4" in done.stderr


def test_jobq_worker_rejects_bad_arguments(redis_server):
    done = run_worker(redis_server.url, "--queue", "nope", "--burst")
    assert done.returncode != 0 and "unknown queue 'nope'" in done.stderr
    done = run_worker(redis_server.url, "--concurrency", "0", "--burst")
    assert done.returncode != 0 and "--concurrency must be at least 1" in done.stderr


def test_sigterm_lets_the_running_job_finish_then_exits_0(r, redis_server):
    job_id = enqueue("sleepy", {"seconds": 1.5})
    proc = start_worker(redis_server.url, "--grace", "20")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    code, _out, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert runs(r, job_id, "end")
    assert job_hash(r, job_id)["status"] == "completed"


def test_sigterm_hands_back_a_job_that_outlives_the_grace_period(r, redis_server):
    job_id = enqueue("sleepy", {"seconds": 30})
    proc = start_worker(redis_server.url, "--grace", "0.5")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    code, _out, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    h = job_hash(r, job_id)
    assert h["status"] == "pending" and h["attempts"] == "0"
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert "handed back at shutdown" in err


def test_second_signal_exits_at_once(r, redis_server):
    job_id = enqueue("sleepy", {"seconds": 30})
    proc = start_worker(redis_server.url, "--grace", "60")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    time.sleep(SAME_SIGNAL_S + 0.3)  # sooner, it would count as the same request (test_pool.py)
    code, _out, _err = stop(proc, signal.SIGINT, timeout=5)
    assert code == 1
    # The job is still marked running; its lease (or a heartbeat lapse) brings it back.
    assert job_hash(r, job_id)["status"] == "processing"


def test_kill_9_mid_job_is_recovered_by_the_heartbeat_lapse(r, redis_server):
    """A worker SIGKILLed mid-job: another worker sees its heartbeat lapse and
    hands the job back long before the 5 s visibility timeout."""
    job_id = enqueue("sleepy", {"seconds": 0.2})
    victim = start_worker(redis_server.url, "--worker-id", "victim")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    stop(victim, signal.SIGKILL)
    assert job_hash(r, job_id)["status"] == "processing"
    r.hset("queue:worker:victim", "host", "another-machine")  # so it is not taken for our own restart
    rescuer = start_worker(redis_server.url, "--worker-id", "rescuer")
    try:
        wait_for(lambda: job_hash(r, job_id)["status"] == "completed", timeout=20, what="recovery")
    finally:
        stop(rescuer)
    h = job_hash(r, job_id)
    assert h["attempts"] == "2" and h["additional_deliveries"] == "1"
    # Brought back by the heartbeat lapse, not by the 5 s lease running out:
    errors = [e["error"] for e in json.loads(h.get("errors", "[]"))] + [h.get("last_error", "")]
    assert any("worker lost" in e for e in errors) or "worker lost" in h.get("last_error", ""), h
    assert len(runs(r, job_id, "start")) == 2  # ran twice: only because its worker died


def test_kill_9_mid_job_is_recovered_by_the_visibility_timeout(r, redis_server):
    """Even with no worker left to notice the lapse, the lease runs out."""
    job_id = enqueue("sleepy", {"seconds": 0.2}, queue="fast")
    victim = start_worker(redis_server.url, "--queue", "fast")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    stop(victim, signal.SIGKILL)
    r.delete("queue:workers")  # the registry is gone: only the lease is left
    time.sleep(1.3)
    reclaim = get_queue("fast").reclaim_stuck()
    assert reclaim == [job_id]


def test_restarted_worker_hands_its_own_orphans_back_at_once(r, redis_server):
    job_id = enqueue("sleepy", {"seconds": 0.2})
    first = start_worker(redis_server.url, "--worker-id", "stable-name")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    stop(first, signal.SIGKILL)
    second = start_worker(redis_server.url, "--worker-id", "stable-name")
    try:
        wait_for(lambda: job_hash(r, job_id)["status"] == "completed", timeout=10, what="recovery on restart")
    finally:
        _code, _out, err = stop(second)
    assert "worker stable-name lost: 1 job(s) of jobs back to pending" in err


def test_restart_without_retry_dead_letters_jobs_that_were_running(r, redis_server, jobq_settings):
    job_id = enqueue("sleepy", {"seconds": 5}, queue="low")
    first = start_worker(redis_server.url, "--queue", "low", "--worker-id", "w-low")
    wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
    stop(first, signal.SIGKILL)
    jobq_settings(QUEUES={"low": {"RETRY_JOBS_RUNNING_BEFORE_RESTART": False}})
    worker = Worker(["low"], worker_id="w-low", burst=True)
    worker.run(install_signals=False)
    h = job_hash(r, job_id, "low")
    assert h["status"] == "failed" and h["last_error"] == "worker restarted while the job was running"


def test_long_job_with_lease_renewal_is_not_run_twice(r, redis_server):
    """A job that runs 3 x the visibility timeout keeps its lease alive."""
    job_id = enqueue("sleepy", {"seconds": 3.6}, queue="fast")
    workers = [start_worker(redis_server.url, "--queue", "fast") for _ in range(2)]
    try:
        wait_for(lambda: job_hash(r, job_id, "fast").get("status") == "completed", timeout=30, what="completion")
    finally:
        for w in workers:
            stop(w)
    assert len(runs(r, job_id, "start")) == 1
    assert job_hash(r, job_id, "fast")["attempts"] == "1"


def test_a_heartbeat_held_up_for_seconds_does_not_hold_up_lease_renewal(r, redis_server):
    """With a cluster, the heartbeat (or a sweep) can wait seconds on a node
    that is down; the leases of jobs on the nodes that are up must still be
    renewed, or the sweep hands them back and they run twice."""
    import threading

    job_id = enqueue("sleepy", {"seconds": 3}, queue="fast")  # 2.5 x its 1.2 s lease
    worker = Worker(["fast"], burst=True, concurrency=1)
    beat = worker._presence.beat
    stuck = threading.Event()

    def slow_beat(**kwargs):
        if not stuck.is_set() and runs(r, job_id, "start"):
            # The first beat once the job runs hangs, like a call to a dead node.
            stuck.set()
            time.sleep(4)
        return beat(**kwargs)

    worker._presence.beat = slow_beat

    def sweeps():  # another worker's, handing back whatever lease runs out
        for _ in range(25):
            get_queue("fast").sweep()
            time.sleep(0.2)

    sweeper = threading.Thread(target=sweeps)
    sweeper.start()
    worker.run(install_signals=False)
    sweeper.join()
    assert stuck.is_set()
    assert len(runs(r, job_id, "start")) == 1
    h = job_hash(r, job_id, "fast")
    assert h["status"] == "completed" and h["attempts"] == "1"


@contextlib.contextmanager
def a_worker_on_a_redis_of_its_own():
    """A jobq_worker process on a private Redis with an AOF, to kill and
    restart under it: yields (server, client, queue), once the worker has
    completed a first job. Stops the worker (asserting it exits 0) after."""
    import redis as redis_py

    from django_jobqueue.devserver import RedisServer
    from django_jobqueue.queue import RedisJobQueue

    server = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
    client = redis_py.Redis(port=server.port, decode_responses=True)
    try:
        proc = start_worker(server.url, "--concurrency", "2")
        q = RedisJobQueue(client, "jobs")
        first = q.enqueue({"a": 1, "b": 1}, name="add")
        wait_for(lambda: client.hget(f"queue:jobs:job:{first}", "status") == "completed", what="first job")
        yield server, client, q
        code, _out, err = stop(proc)
        assert code == 0, err[-3000:]
        assert "Redis unavailable" in err
        # Said once, when Redis answers again; not by every maintenance pass
        # that happened not to call it during the outage.
        assert err.count("Redis is back") == 1, err[-3000:]
    finally:
        client.close()
        server.cleanup()


def test_redis_restarted_under_a_running_worker():
    """The worker logs, waits, and carries on when Redis is back."""
    with a_worker_on_a_redis_of_its_own() as (server, client, q):
        server.restart(kill=True)
        time.sleep(1.0)
        second = q.enqueue({"a": 2, "b": 2}, name="add")
        wait_for(
            lambda: client.hget(f"queue:jobs:job:{second}", "status") == "completed", timeout=30, what="after restart"
        )


def test_a_worker_resumes_within_about_a_second_of_redis_answering_again():
    """After a long outage the runners' pauses between tries stay short: the
    first job enqueued once Redis is back runs within about a second."""
    with a_worker_on_a_redis_of_its_own() as (server, client, q):
        server.kill()
        time.sleep(12)  # long enough for any growing backoff to reach its ceiling
        server.start()
        back = time.monotonic()
        second = q.enqueue({"a": 2, "b": 2}, name="add")
        wait_for(lambda: client.hget(f"queue:jobs:job:{second}", "status") == "completed", timeout=30, what="after")
        # The bound the docs give (at most 1 s between tries), with room for the
        # worker's own start of work; with pauses of up to 10 s this took up to 10 s.
        assert time.monotonic() - back < 3.5


# ------------------------------------------------------ batching and prefetch


def test_prefetched_jobs_not_started_are_handed_back_at_shutdown(r, redis_server, jobq_settings):
    first = enqueue("sleepy", {"seconds": 30})
    rest = [enqueue("add", {"a": n, "b": 0}) for n in range(3)]
    proc = start_worker(redis_server.url, "--concurrency", "1", "--grace", "0.3")  # prefetch = 1 by default
    wait_for(lambda: runs(r, first, "start"), what="the first job to start")
    code, _out, err = stop(proc)
    assert code == 0, err
    assert r.llen("queue:jobs:processing") == 0 and r.llen("queue:jobs:claiming") == 0
    for job_id in [first, *rest]:
        h = job_hash(r, job_id)
        assert h["status"] == "pending" and h["attempts"] == "0", h
    assert r.lrange("queue:jobs:pending", -1, -1) in ([first], [rest[0]])  # handed back to the head


def test_a_completion_is_recorded_while_the_runner_is_busy_with_a_prefetched_job(r):
    import threading

    quick = enqueue("add", {"a": 1, "b": 1})
    slow = enqueue("sleepy", {"seconds": 3})
    worker = Worker(["jobs"], concurrency=1, burst=True)
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    t.start()
    try:
        wait_for(lambda: job_hash(r, quick).get("status") == "completed", what="the quick job's completion")
        # Recorded before the slow job (which the same runner took next) ended:
        assert runs(r, slow, "start") and not runs(r, slow, "end")
    finally:
        t.join(15)
    assert job_hash(r, slow)["status"] == "completed"


def test_a_fetcher_with_a_limit_hands_out_no_more_than_it(r):
    # A runner that asks once the limit is handed out (its check of the
    # worker's count raced another runner taking the last job) gets nothing:
    # no claim is made only for the job to be handed back at the exit.
    q = get_queue("jobs")
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(3)]
    fetcher = driven_fetcher(q, limit=1)
    (_q, first), _empty = fetcher.next_job(eager=True)
    assert first.id == ids[0]
    assert fetcher.spent
    assert fetcher.next_job(eager=True) == (None, True)
    assert r.llen(q.keys.processing) == 1 and r.llen(q.keys.pending) == 2


def test_a_prefetched_job_whose_claim_died_with_the_primary_is_not_run(r):
    # A failover to a replica that never saw a claim: the worker holds the job
    # (prefetched, waiting for a runner) while the new primary hands it out
    # again. After a Redis error, a waiting job is checked before it starts.
    q = get_queue("jobs")
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(3)]
    before_claim = r.hgetall(q.keys.job(ids[1]))
    lost: list[str] = []
    fetcher = driven_fetcher(q, prefetch=2, on_lost=lambda queue, claimed, outcome: lost.append(claimed.id))
    (_q, first), _empty = fetcher.next_job()
    assert first.id == ids[0]  # ids[1] and ids[2] wait, claimed, for a runner

    # The new primary: ids[1] as it was before the claim, back in pending...
    with r.pipeline(transaction=True) as new_primary:
        new_primary.delete(q.keys.job(ids[1])).hset(q.keys.job(ids[1]), mapping=before_claim)
        new_primary.lrem(q.keys.processing, 0, ids[1]).zrem(q.keys.leases, ids[1]).rpush(q.keys.pending, ids[1])
        new_primary.execute()
    # ...and another worker claims it there.
    theirs = q.claim_nowait("w2")
    assert theirs is not None and theirs.id == ids[1]
    fetcher.redis_failed()  # what the worker calls when a Redis call fails

    assert fetcher.next_job() == (None, False)  # dropped, not run
    assert lost == [ids[1]]
    assert job_hash(r, ids[1])["claim_token"] == theirs.claim_token  # their claim untouched
    (_q, third), _empty = fetcher.next_job()  # its claim survived: it runs
    assert third.id == ids[2] and job_hash(r, ids[2])["status"] == "processing"


@pytest.mark.parametrize("queues", [["jobs"], ["high", "jobs"]], ids=["one queue", "a lower-priority queue"])
def test_jobs_of_a_claim_whose_reply_was_lost_are_handed_back_at_once(r, monkeypatch, jobq_settings, queues):
    # The connection fails after Redis ran a claim: the worker never learns
    # which jobs it took. Its next fetch hands them back without using an
    # attempt, rather than leaving them until their leases run out (here
    # ten minutes) and then counting an attempt that never ran.
    import redis

    from django_jobqueue.engine import scripts

    jobq_settings(QUEUES={name: {"VISIBILITY_MS": 600_000} for name in queues})
    ids = [enqueue("add", {"a": n, "b": 0}, max_attempts=1) for n in range(3)]
    send = scripts.run_pipeline
    lost: list = []

    def reply_lost(client, calls, **options):
        replies = send(client, calls, **options)
        if not lost and calls[-1][0].name == "claim" and calls[-1][1][0] == "queue:jobs:pending":
            lost.append(replies[-1])
            raise redis.exceptions.ConnectionError("connection lost before the reply (test)")
        return replies

    monkeypatch.setattr(scripts, "run_pipeline", reply_lost)
    drain(*queues)
    taken = {fields[fields.index("id") + 1] for fields in lost[0]}
    assert taken  # the claim whose reply was lost had taken jobs
    for job_id in ids:
        h = job_hash(r, job_id)
        assert (h["status"], h["attempts"]) == ("completed", "1"), h  # run once, one attempt used
        assert h.get("releases") == ("1" if job_id in taken else None), h
    assert r.llen("queue:jobs:processing") == 0


def test_prefetch_zero_claims_only_for_idle_runners(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"PREFETCH": 0}})
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(4)]
    worker = Worker(["jobs"], concurrency=1, max_jobs=1)
    worker.run(install_signals=False)
    assert job_hash(r, ids[0])["status"] == "completed"
    assert all(job_hash(r, i)["attempts"] == "0" for i in ids[1:])


def test_idle_runners_join_a_batch_one_at_a_time(r, monkeypatch):
    # The jobs of a long batch of short ones all look old to an idle runner:
    # if each joined as soon as the oldest had waited HELP_AFTER_S, all of them
    # would pile in at once (GIL hand-offs for nothing). One joins; the next
    # only HELP_AFTER_S later, if jobs still wait.
    from django_jobqueue.worker import fetcher as fetcher_module

    monkeypatch.setattr(fetcher_module, "HELP_AFTER_S", 0.3)
    q = get_queue("jobs")
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(4)]
    fetcher = driven_fetcher(q, prefetch=3)
    (_q, first), _empty = fetcher.next_job(eager=True)  # the leader claims all four
    assert first.id == ids[0]
    time.sleep(0.35)
    (_q, second), _empty = fetcher.next_job(eager=False)  # the oldest ready job waited: one joins
    assert second.id == ids[1]
    assert fetcher.next_job(eager=False) == (None, False)  # the next waits its turn
    time.sleep(0.35)
    (_q, third), _empty = fetcher.next_job(eager=False)
    assert third.id == ids[2]


def test_idle_runners_time_their_joining_from_when_the_jobs_were_made_ready(r, monkeypatch):
    # A claim whose reply is slow must not make its jobs look old: idle runners
    # would pile in behind the leader at once (the jobs' TTL checks, though,
    # count from when the claim was sent).
    from django_jobqueue.engine import scripts
    from django_jobqueue.worker import fetcher as fetcher_module

    monkeypatch.setattr(fetcher_module, "HELP_AFTER_S", 0.3)
    real = scripts.run_pipeline

    def slow_reply(client, calls, **kwargs):
        replies = real(client, calls, **kwargs)
        time.sleep(0.35)
        return replies

    monkeypatch.setattr(scripts, "run_pipeline", slow_reply)
    q = get_queue("jobs")
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(3)]
    fetcher = driven_fetcher(q, prefetch=2)
    (_q, first), _empty = fetcher.next_job(eager=True)  # the leader claims all three
    assert first.id == ids[0]
    assert fetcher.next_job(eager=False) == (None, False)  # just made ready: nobody joins yet
    time.sleep(0.35)
    (_q, second), _empty = fetcher.next_job(eager=False)
    assert second.id == ids[1]


def test_a_fetch_claims_a_full_batch_while_the_jobs_are_short(r):
    from django_jobqueue.worker.fetcher import MAX_BATCH, SHORT_JOB_S

    q = get_queue("jobs")
    for n in range(MAX_BATCH + 5):
        enqueue("add", {"a": n, "b": 0})
    fetcher = driven_fetcher(q, prefetch=1, short_batch=MAX_BATCH)
    fetcher.next_job()
    assert r.llen(q.keys.processing) == 2  # nothing known of the jobs yet: itself plus the prefetch
    fetcher.job_ran(SHORT_JOB_S * 10)
    fetcher.take_unstarted()
    fetcher.next_job()
    assert r.llen(q.keys.processing) == 4  # long jobs: the same
    for _ in range(30):
        fetcher.job_ran(SHORT_JOB_S / 10)  # the average comes down
    fetcher.take_unstarted()
    fetcher.next_job()
    assert r.llen(q.keys.processing) == 4 + MAX_BATCH


def test_an_explicit_prefetch_caps_the_claims_of_short_jobs(r, jobq_settings):
    jobq_settings(QUEUES={"jobs": {"PREFETCH": 2}})
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(40)]
    claims = []
    worker = Worker(["jobs"], concurrency=1, burst=True)
    real = worker._fetcher._on_claimed
    worker._fetcher._on_claimed = lambda queue, jobs: claims.append(len(jobs)) or real(queue, jobs)
    worker.run(install_signals=False)
    assert all(job_hash(r, i)["status"] == "completed" for i in ids)
    assert max(claims) == 3  # the runner's job plus PREFETCH, however short the jobs


def test_slow_jobs_spread_over_every_runner(r):
    # Idle runners join in only when work waits, so short jobs run on few
    # threads; jobs that take time must still run side by side.
    from tests.testapp.jobs import TOGETHER, together_barrier

    together_barrier.reset()
    ids = [enqueue("together", {}) for _ in range(TOGETHER)]
    drain("jobs", concurrency=TOGETHER)
    hashes = [job_hash(r, job_id) for job_id in ids]
    assert [h["status"] for h in hashes] == ["completed"] * TOGETHER, [h.get("last_error") for h in hashes]
    assert len({h["result"] for h in hashes}) == TOGETHER  # one thread each


@pytest.mark.django_db(transaction=True)
def test_stale_database_connections_are_closed_after_jobs_that_used_one(r, monkeypatch):
    # As Django does around a request: close_old_connections() drops a
    # connection past CONN_MAX_AGE or left unusable. Jobs that never touched
    # the database skip it (it costs more than a short job).
    from django_jobqueue.worker import dbconn

    calls = []
    real = dbconn.close_old_connections
    monkeypatch.setattr(dbconn, "close_old_connections", lambda: calls.append(1) or real())
    enqueue("add", {"a": 1, "b": 1})
    drain("jobs", concurrency=1)
    assert calls == []
    ids = [enqueue("uses_db", {}) for _ in range(3)]
    drain("jobs", concurrency=1)
    assert [job_hash(r, i)["status"] for i in ids] == ["completed"] * 3
    assert len(calls) >= 3  # after each of them


def test_no_lease_lost_warning_when_renewal_races_a_completion_just_sent(r, caplog):
    # The runner's completion reached Redis a moment before the renewal's
    # touch: the touch is refused, but nothing was lost, so nothing is said.
    from django_jobqueue.worker.running import Running

    q = get_queue("jobs")
    enqueue("add", {"a": 1, "b": 2})
    worker = Worker(["jobs"], burst=True)
    claimed = q.claim_nowait(worker.worker_id)
    worker.running_jobs.add(Running(q, claimed, finished=True))  # the handler returned; the ack is on its way
    assert q.complete(claimed, {"sum": 3})  # the batched completion, sent by another thread
    with caplog.at_level("WARNING", logger="django_jobqueue.worker"):
        worker.renewal.renew(q)
    assert "lease lost" not in caplog.text

    # A job still running whose claim was taken from it is worth the warning.
    enqueue("add", {"a": 1, "b": 2})
    claimed = q.claim_nowait(worker.worker_id)
    worker.running_jobs.forget_many([held.claimed.id for held in worker.running_jobs.snapshot()])  # only this job
    worker.running_jobs.add(Running(q, claimed))
    q.reclaim_worker_jobs([worker.worker_id])
    with caplog.at_level("WARNING", logger="django_jobqueue.worker"):
        worker.renewal.renew(q)
    assert f"job {claimed.id}: lease lost" in caplog.text
