"""Bad input and bad Redis states: a clear error at enqueue, or a recorded error in
the worker; never a crash, never a half-written job.

Payload, name, option and token checks at enqueue are in test_enqueue.py and
test_engine.py; TLS with a bad CA is in test_security.py. Here: Redis data
corrupted under a running worker, Redis unreachable (at worker start, mid-run, or
cut off by the network for twice the visibility timeout), a reply lost in the
network, a full Redis, a read-only replica and a wrong password.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import threading

import pytest
import redis

from django_jobqueue import QueueUnavailable, enqueue, get_queue
from django_jobqueue.devserver import RedisServer, free_port
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker import Worker
from tests.helpers.redis_data import job_status
from tests.helpers.servers import FlakyProxy
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_logged_worker, start_worker, stop, stop_worker, worker_env
from tests.testapp.jobs import runs

# --------------------------------------------------------------------- helpers


class Records(logging.Handler):
    """The worker's log records, whatever the logging configuration of the process."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def worker_log():
    handler = Records()
    logger = logging.getLogger("django_jobqueue")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@contextlib.contextmanager
def running_worker(*queues: str, **options):
    """A worker in a thread of this process (so the test can watch it), stopped at the end."""
    worker = Worker(list(queues) or None, **options)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def job_keys(r) -> list[str]:
    return sorted(r.keys("queue:*:job:*"))


# ------------------------------------------------- a reply lost in the network


def warm_up(q: RedisJobQueue, r) -> None:
    """Load the scripts, so that the reply the proxy loses is a script's, not NOSCRIPT's."""
    q.enqueue({})
    q.complete(q.claim_nowait("w"), None)
    r.flushall()


def test_a_reply_lost_in_the_network_does_not_enqueue_the_job_twice(redis_server, r):
    """redis-py resends a command whose connection broke before the reply came
    (3 retries by default): the enqueue script then runs a second time with the
    same job id, and must not write the job twice."""
    with FlakyProxy(redis_server.port) as proxy:
        client = redis.Redis(port=proxy.port, decode_responses=True)
        q = RedisJobQueue(client, "jobs")
        warm_up(q, r)
        proxy.lose_reply_to = b"EVALSHA"
        job_id = q.enqueue({"n": 1})
        client.close()
        assert proxy.lost == 1  # the first run's reply never came back
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    assert r.hget("queue:jobs:stats", "enqueued") == "1"


def test_a_completion_whose_reply_was_lost_is_applied_once(redis_server, r):
    """The resent complete finds the job finished: it answers "not yours" (the
    worker logs a lost claim), and the job is completed once, with one count."""
    with FlakyProxy(redis_server.port) as proxy:
        client = redis.Redis(port=proxy.port, decode_responses=True)
        q = RedisJobQueue(client, "jobs")
        warm_up(q, r)
        job_id = q.enqueue({})
        job = q.claim(0)
        proxy.lose_reply_to = b"EVALSHA"
        assert q.complete(job, "done") is False
        client.close()
        assert proxy.lost == 1
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "completed"
    assert r.hget("queue:jobs:stats", "completed") == "1"
    assert r.lrange("queue:jobs:completed", 0, -1) == [job_id]


def test_a_claim_whose_reply_was_lost_delays_its_job_by_one_lease(redis_server, r):
    """The resent claim takes the next job; the first stays claimed by nobody
    until its lease runs out, then goes back to pending with its attempt counted."""
    with FlakyProxy(redis_server.port) as proxy:
        client = redis.Redis(port=proxy.port, decode_responses=True)
        q = RedisJobQueue(client, "jobs", visibility_ms=200)
        warm_up(q, r)
        first, second = q.enqueue({"n": 1}), q.enqueue({"n": 2})
        proxy.lose_reply_to = b"EVALSHA"
        got = q.claim_nowait("w")
        client.close()
        assert proxy.lost == 1
    assert got.id == second
    assert r.hget(f"queue:jobs:job:{first}", "status") == "processing"
    q = RedisJobQueue(r, "jobs", visibility_ms=200)
    assert q.complete(got, "second done") is True
    wait_for(lambda: first in q.reclaim_stuck(), what="the first job's lease to run out")
    again = q.claim_nowait("w")
    assert again.id == first and again.attempts == 2


def test_enqueueing_an_id_again_changes_nothing(r):
    """What a resent enqueue does when a worker claimed the job in between: it must
    not reset a running job to pending (attempts 0, no token) behind its worker."""
    q = RedisJobQueue(r, "jobs")
    job_id = q.enqueue({"n": 1})
    running = q.claim(0)
    assert q.enqueue({"n": 2}, job_id=job_id) == job_id
    h = r.hgetall(f"queue:jobs:job:{job_id}")
    assert (h["status"], h["attempts"], h["claim_token"], h["payload"]) == (
        "processing",
        "1",
        running.claim_token,
        '{"n":1}',
    )
    assert r.llen("queue:jobs:pending") == 0
    assert q.complete(running, "ok") is True


# ---------------------------------------------- Redis data corrupted by hand


def test_missing_payload_field_is_dead_lettered_and_the_worker_goes_on(r, worker_log):
    bad = enqueue("add", {"a": 1, "b": 2})
    r.hdel(f"queue:jobs:job:{bad}", "payload")
    good = enqueue("add", {"a": 2, "b": 2})
    with running_worker("jobs"):
        wait_for(
            lambda: job_status(r, good) == "completed" and job_status(r, bad) == "failed", what="both jobs handled"
        )
    assert r.hget(f"queue:jobs:job:{bad}", "last_error") == "payload cannot be decoded: payload is missing"
    assert runs(r, bad) == []
    assert "dead-lettered" in worker_log.text()


def test_pickle_blob_as_payload_is_never_unpickled_and_the_worker_survives(r, worker_log):
    """A pickle (raw bytes, not UTF-8) written over a payload by an attacker with
    Redis access. It must never be loaded; the worker must not lose a runner thread
    over it, and the job ends dead-lettered."""
    bad = enqueue("add", {"a": 1, "b": 2}, queue="fast")
    raw = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
    raw.hset(f"queue:fast:job:{bad}", "payload", pickle.dumps({"a": 1, "b": 2}))
    raw.close()
    with running_worker("fast", concurrency=1) as worker:
        wait_for(lambda: job_status(r, bad, "fast") == "failed", timeout=60, what="the bad job to be dead-lettered")
        good = enqueue("add", {"a": 2, "b": 2}, queue="fast")
        wait_for(lambda: job_status(r, good, "fast") == "completed", what="the next job, on the same runner")
        assert all(t.is_alive() for t in worker._runners)
    assert runs(r, bad) == []
    # Decoded with replacement characters, so refused as JSON at the first claim:
    port = r.connection_pool.connection_kwargs["port"]
    lenient = redis.Redis(port=port, decode_responses=True, encoding_errors="replace")
    data = lenient.hgetall(f"queue:fast:job:{bad}")
    lenient.close()
    assert data["last_error"].startswith("payload cannot be decoded") and data["attempts"] == "1"


def test_an_id_with_no_hash_under_a_running_worker_is_dropped_and_counted(r):
    with running_worker("jobs"):
        r.lpush("queue:jobs:pending", "f" * 36)
        after = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: job_status(r, after) == "completed", what="the next job")
    assert r.hget("queue:jobs:stats", "orphans") == "1"
    assert "f" * 36 not in r.lrange("queue:jobs:processing", 0, -1)


def test_a_job_hash_of_the_wrong_type_is_reported_and_the_worker_goes_on(r, worker_log):
    bad = enqueue("add", {"a": 1, "b": 1})
    r.delete(f"queue:jobs:job:{bad}")
    r.set(f"queue:jobs:job:{bad}", "not a hash")
    with running_worker("jobs"):
        good = enqueue("add", {"a": 2, "b": 2})
        wait_for(lambda: job_status(r, good) == "completed", timeout=30, what="the next job")
    assert "WRONGTYPE" in worker_log.text()


def test_a_wrong_typed_job_key_in_a_batch_claim_drops_that_id_and_claims_the_rest(r, caplog):
    q = get_queue()
    first, bad, last = (q.enqueue({"n": n}) for n in range(3))
    r.delete(f"queue:jobs:job:{bad}")
    r.set(f"queue:jobs:job:{bad}", "not a hash")
    with caplog.at_level(logging.ERROR, logger="django_jobqueue"):
        claimed = q.claim_many(3, "w1")
    assert [job.id for job in claimed] == [first, last]
    assert "WRONGTYPE" in caplog.text and bad in caplog.text
    # The bad id is on no list; both claimed jobs hold a lease and sit in the worker's set.
    assert r.lrange("queue:jobs:pending", 0, -1) == []
    assert r.lrange("queue:jobs:processing", 0, -1) == [last, first]  # newest claim at the head
    assert set(r.zrange("queue:jobs:leases", 0, -1)) == {first, last}
    assert r.smembers("queue:jobs:worker-jobs:w1") == {first, last}
    assert r.get(f"queue:jobs:job:{bad}") == "not a hash"  # left for a person to look at
    assert r.hget("queue:jobs:stats", "orphans") == "1"
    # One at a time, the same key is an error reply; the next claim goes past it.
    bad = q.enqueue({})
    r.delete(f"queue:jobs:job:{bad}")
    r.set(f"queue:jobs:job:{bad}", "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.claim_nowait("w1")
    good = q.enqueue({})
    assert q.claim_nowait("w1").id == good


def test_pending_of_the_wrong_type_refuses_enqueue_and_writes_nothing(r):
    r.set("queue:jobs:pending", "not a list")
    with pytest.raises(QueueUnavailable, match="WRONGTYPE"):
        enqueue("add", {"a": 1, "b": 1})
    assert job_keys(r) == []
    with pytest.raises(QueueUnavailable, match="WRONGTYPE"):
        enqueue("add", {"a": 1, "b": 1}, unique_key="k")
    assert job_keys(r) == [] and not r.exists("queue:jobs:unique")


def test_pending_of_the_wrong_type_under_a_running_worker_is_logged_until_repaired(r, worker_log):
    with running_worker("jobs"):
        r.set("queue:jobs:pending", "not a list")
        wait_for(lambda: "WRONGTYPE" in worker_log.text(), what="the worker to report it")
        r.delete("queue:jobs:pending")
        job_id = enqueue("add", {"a": 1, "b": 1})
        wait_for(lambda: job_status(r, job_id) == "completed", what="work to resume")
    assert "claim failed" in worker_log.text()


def test_a_counter_key_of_the_wrong_type_loses_no_job(r):
    q = get_queue()
    job_id = q.enqueue({})
    job = q.claim(0)
    r.set("queue:jobs:stats", "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.complete(job, "ok")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.claim(0)
    r.delete("queue:jobs:stats")
    # Nothing changed: the job is still claimed, on the processing list with its
    # lease, and its completion goes through once the key is repaired.
    assert job_id in r.lrange("queue:jobs:processing", 0, -1)
    assert r.zscore("queue:jobs:leases", job_id) is not None
    assert q.complete(job, "ok")


def _where(r, job_id: str) -> dict:
    """Every trace of a job: its hash, and each list and sorted set holding its id."""
    lists = [k for k in r.keys("queue:jobs:*") if r.type(k) == "list"]
    zsets = [k for k in r.keys("queue:jobs:*") if r.type(k) == "zset"]
    return {
        "hash": r.hgetall(f"queue:jobs:job:{job_id}"),
        "lists": sorted(k for k in lists if job_id in r.lrange(k, 0, -1)),
        "zsets": sorted(k for k in zsets if r.zscore(k, job_id) is not None),
    }


def _claimed(q, r):
    job_id = q.enqueue({})
    return job_id, q.claim(0, "w1")


def _failed(q, r):
    job_id = q.enqueue({}, max_attempts=1)
    q.fail(q.claim(0), "boom")
    return job_id, None


RARER = {
    "fail": (_claimed, lambda q, job_id, job: q.fail(job, "boom")),
    "requeue": (_claimed, lambda q, job_id, job: q.requeue(job)),
    "retry": (_failed, lambda q, job_id, job: q.retry(job_id)),
    "delete": (_failed, lambda q, job_id, job: q.delete(job_id)),
    "reclaim": (_claimed, lambda q, job_id, job: q.reclaim_worker_jobs(["w1"])),
}


@pytest.mark.parametrize("script", sorted(RARER))
def test_the_rarer_scripts_refuse_a_shared_key_of_the_wrong_type_and_change_nothing(r, script):
    make, call = RARER[script]
    q = get_queue()
    job_id, job = make(q, r)
    before = _where(r, job_id)
    r.set("queue:jobs:stats", "not a hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE queue:jobs:stats .*nothing was changed"):
        call(q, job_id, job)
    assert _where(r, job_id) == before
    r.delete("queue:jobs:stats")
    call(q, job_id, job)  # repaired: it goes through
    assert _where(r, job_id) != before


# ----------------------------------------------------------- Redis unreachable


def test_worker_started_before_redis_waits_logs_then_works(tmp_path):
    port = free_port()
    log_path = tmp_path / "worker.log"
    proc = start_logged_worker(worker_env(f"redis://127.0.0.1:{port}/0"), log_path, "--worker-id", "early")
    try:
        wait_for(lambda: "Redis unavailable" in log_path.read_text(), timeout=30, what="the worker to say so")
        assert proc.poll() is None
        with RedisServer(port=port) as server:
            client = redis.Redis(port=server.port, decode_responses=True)
            wait_for(lambda: client.zscore("queue:workers", "early"), timeout=30, what="the worker to register")
            job_id = RedisJobQueue(client, "jobs").enqueue({"a": 1, "b": 2}, name="add")
            wait_for(lambda: job_status(client, job_id) == "completed", timeout=30, what="the job")
            assert stop_worker(proc) == 0
            client.close()
    finally:
        stop_worker(proc)
    text = log_path.read_text()
    assert "registering the worker: Redis unavailable" in text and "Traceback" not in text


class SilentServer:
    """A loopback TCP server that accepts connections and never answers: a
    Redis hung (stopped by SIGSTOP, a stalled VM) or a wrong port behind a proxy."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)  # kept open, never read, never answered

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_enqueue_to_a_redis_that_never_answers_gives_up_after_socket_timeout(jobq_settings):
    """SOCKET_TIMEOUT bounds enqueue(): a call that timed out is not sent again
    (it may be running on a slow server; another wait would double the bound)."""
    import time

    server = SilentServer()
    try:
        jobq_settings(REDIS_URL=f"redis://127.0.0.1:{server.port}/0", SOCKET_TIMEOUT=1.0)
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match="[Tt]imeout"):
            enqueue("add", {"a": 1, "b": 1})
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert 0.9 < elapsed < 1.9, elapsed  # one SOCKET_TIMEOUT, not two
    assert len(server.accepted) == 1  # not sent again on a new connection


def test_enqueue_on_a_connection_the_server_closed_while_idle_is_sent_again(r, redis_server, jobq_settings):
    """The connection a thread keeps between calls was closed by the server (a
    restart, an idle timeout, CLIENT KILL): the enqueue goes through at once, once."""
    jobq_settings(REDIS_URL=redis_server.url, SOCKET_TIMEOUT=1.0, REDIS_OPTIONS={"client_name": "idle-enqueuer"})
    first = enqueue("add", {"a": 1, "b": 1})
    ((mine,),) = [[c["id"] for c in r.client_list() if c["name"] == "idle-enqueuer"]]
    assert r.client_kill_filter(_id=mine) == 1
    second = enqueue("add", {"a": 2, "b": 2})
    assert r.lrange("queue:jobs:pending", 0, -1) == [second, first]
    assert r.hget("queue:jobs:stats", "enqueued") == "2"


def test_worker_cut_off_for_twice_the_visibility_timeout_cannot_finish_the_job(r, redis_server):
    """The network stalls under a running job for longer than its lease (1.2 s on
    the "fast" queue): the job is reclaimed and run by someone else; when the
    connection comes back, the first worker's completion is refused."""
    job_id = enqueue("sleepy", {"seconds": 2}, queue="fast")
    with FlakyProxy(redis_server.port) as proxy:
        proc = start_worker(proxy.url, "--queue", "fast", "--worker-id", "cut-off")
        try:
            wait_for(lambda: runs(r, job_id, "start"), what="the job to start")
            proxy.stall()
            q = get_queue("fast")
            wait_for(lambda: job_id in q.sweep().reclaimed, timeout=20, what="the lease to run out")
            rescue = q.claim(0, worker_id="rescuer")
            assert rescue.id == job_id and rescue.attempts == 2
            assert q.complete(rescue, "rescued") is True
            proxy.resume()
            wait_for(lambda: runs(r, job_id, "end"), timeout=20, what="the first run to finish")
        finally:
            proxy.resume()
            _code, _out, err = stop(proc)
    assert r.hget(f"queue:fast:job:{job_id}", "result") == '"rescued"'
    assert "claim lost" in err


# ------------------------------------------------------------------ full Redis


class FullRedis:
    """A private server with ``noeviction``, and a way to fill it to its maxmemory."""

    def __init__(self) -> None:
        self.server = RedisServer(["--maxmemory-policy", "noeviction"]).start()
        self.client = redis.Redis(port=self.server.port, decode_responses=True)

    def limit(self, headroom: int) -> None:
        used = int(self.client.info("memory")["used_memory"])
        self.client.config_set("maxmemory", used + headroom)

    def fill(self) -> None:
        self.limit(4 * 1024 * 1024)
        blob = "x" * 100_000
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            for i in range(1000):
                self.client.set(f"filler:{i}", blob)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            self.client.set("filler:one-more", blob)

    def free(self) -> None:
        self.client.delete(*self.client.keys("filler:*"))


@pytest.fixture
def full(jobq_settings):
    full = FullRedis()
    jobq_settings(REDIS_URL=full.server.url)
    yield full
    full.client.close()
    full.server.cleanup()


def test_full_redis_refuses_enqueue_and_writes_nothing(full):
    full.fill()
    before = full.client.dbsize()
    with pytest.raises(QueueUnavailable, match="maxmemory"):
        enqueue("add", {"a": 1, "b": 1})
    with pytest.raises(QueueUnavailable, match="maxmemory"):
        enqueue("add", {"a": 1, "b": 1}, unique_key="k")
    assert full.client.dbsize() == before
    full.free()
    assert job_status(full.client, enqueue("add", {"a": 1, "b": 1})) == "pending"


def test_redis_judges_maxmemory_when_a_script_starts_never_in_its_middle(full):
    """Why an enqueue (one script per job) is whole or absent on a full Redis.

    Redis 7, for scripts without flags: over maxmemory, a script's first write that
    may grow memory is refused, so it stops before writing anything; a script that
    has written once runs to its end, even past maxmemory. (Redis never undoes a
    script's writes, so this is what keeps OOM from cutting one in half.)"""
    grow = "redis.call('SET', KEYS[1], '1') redis.call('SET', KEYS[2], string.rep('x', 2000000)) return 1"
    full.limit(256 * 1024)
    assert full.client.eval(grow, 2, "a", "b") == 1  # crosses the limit in its middle: not stopped
    assert full.client.exists("a", "b") == 2
    assert int(full.client.info("memory")["used_memory"]) > int(full.client.config_get("maxmemory")["maxmemory"])
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        full.client.eval(grow, 2, "c", "d")
    assert full.client.exists("c", "d") == 0
    with pytest.raises(QueueUnavailable, match="maxmemory"):
        enqueue("add", {"a": 2, "b": 2})
    assert job_keys(full.client) == []


def test_full_redis_running_jobs_finish_claims_wait_and_the_worker_survives(full, worker_log):
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(3)]
    q = get_queue()
    held = q.claim_nowait("someone")
    full.fill()
    # A job already running can still finish: completing does not need memory.
    assert q.complete(held, {"sum": 0}) is True
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        q.claim_nowait("someone")
    with running_worker("jobs", concurrency=1):
        wait_for(lambda: "maxmemory" in worker_log.text(), what="the worker to report the full Redis")
        full.free()
        wait_for(lambda: all(job_status(full.client, i) == "completed" for i in ids), what="work to resume")
    assert "Redis unavailable" in worker_log.text()


# ---------------------------------------------------- replica, wrong password


def test_read_only_replica_refuses_enqueue_and_writes_nothing(replica, r, jobq_settings):
    jobq_settings(REDIS_URL=replica.url)
    with pytest.raises(QueueUnavailable, match="read only replica"):
        enqueue("add", {"a": 1, "b": 1})
    assert job_keys(r) == []


def test_worker_on_a_read_only_replica_waits_until_it_is_promoted(replica, tmp_path):
    log_path = tmp_path / "worker.log"
    proc = start_logged_worker(worker_env(replica.url), log_path, "--worker-id", "on-replica")
    client = redis.Redis(port=replica.port, decode_responses=True)
    try:
        wait_for(lambda: "read only replica" in log_path.read_text(), timeout=30, what="the worker to say so")
        assert proc.poll() is None, log_path.read_text()
        client.replicaof("NO", "ONE")  # a failover promotes it
        job_id = RedisJobQueue(client, "jobs").enqueue({"a": 1, "b": 2}, name="add")
        wait_for(lambda: job_status(client, job_id) == "completed", timeout=30, what="the job")
        assert stop_worker(proc) == 0
    finally:
        client.close()
        stop_worker(proc)
    assert "Traceback" not in log_path.read_text()


def test_wrong_password_refuses_enqueue_without_showing_the_password(password_server, jobq_settings):
    jobq_settings(REDIS_URL=f"redis://:wrong-pass@127.0.0.1:{password_server.port}/0")
    with pytest.raises(QueueUnavailable) as info:
        enqueue("add", {"a": 1, "b": 1})
    assert "wrong-pass" not in str(info.value)
    jobq_settings(REDIS_URL=f"redis://:{password_server.password}@127.0.0.1:{password_server.port}/0")
    assert enqueue("add", {"a": 1, "b": 1})


def test_worker_with_a_wrong_password_waits_and_never_logs_the_password(password_server, tmp_path):
    log_path = tmp_path / "worker.log"
    proc = start_logged_worker(worker_env(f"redis://:wrong-pass@127.0.0.1:{password_server.port}/0"), log_path)
    try:
        wait_for(lambda: "Redis unavailable" in log_path.read_text(), timeout=30, what="the worker to say so")
        assert proc.poll() is None
        assert stop_worker(proc) == 0
    finally:
        stop_worker(proc)
    text = log_path.read_text()
    assert "wrong-pass" not in text and "Traceback" not in text
    assert "invalid username-password pair" in text
