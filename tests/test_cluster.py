"""Redis Cluster: a real local cluster of 3 primaries and 3 replicas (tests/helpers/cluster.py).

Each queue's keys share its hash tag, ``queue:{q0}:pending``, so every script
call runs on the one primary that holds the queue; queues spread over the
primaries. Worker processes keep going through a coordinated failover
(CLUSTER FAILOVER: nothing lost, nothing run twice) and through a primary
SIGKILLed mid-run (asynchronous replication: what the dead primary had not yet
passed to its replica is lost, so the jobs whose completion, or lease, was lost
run again; each is counted, and every other job runs exactly once).
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import threading
import time

import pytest
from redis.cluster import key_slot

from django_jobqueue import aenqueue, aenqueue_many, enqueue
from django_jobqueue.engine import cluster as jq_cluster
from django_jobqueue.engine import scripts
from django_jobqueue.engine.keys import GlobalKeys, QueueKeys
from django_jobqueue.engine.limits import FlowLimits, Rate, set_limits
from django_jobqueue.engine.schedules import Schedule, ScheduleStore, plan
from django_jobqueue.exceptions import ReplicationError
from django_jobqueue.queue import Outcome, RedisJobQueue
from django_jobqueue.worker import Worker
from django_jobqueue.worker.scheduler import Scheduler
from tests.helpers.cluster import (
    CompletedSignals,
    Ledger,
    LocalCluster,
    cluster_worker_env,
    enqueue_jobs,
    job_statuses,
    server_major_version,
)
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_logged_worker, stop_worker

pytestmark = [
    pytest.mark.skipif(server_major_version() < 7, reason="cluster mode needs Redis 7+ (sharded pub/sub)"),
    pytest.mark.skipif(
        not (shutil.which("redis-cli") or shutil.which("valkey-cli")), reason="redis-cli is needed to create a cluster"
    ),
]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(primaries=3, replicas=1) as c:
        yield c


@pytest.fixture
def cc(cluster):
    """A RedisCluster client on a clean cluster (no keys, no cached scripts)."""
    cluster.flushall()
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
def spread(cluster):
    """Three queue names held by three different primaries."""
    names = cluster.queue_names_on_distinct_primaries(3)
    assert len({cluster.primary_for_queue(n) for n in names}) == 3
    return names


# ------------------------------------------------------------- the keyspace


def test_every_key_list_of_every_script_call_hashes_to_one_slot():
    keys = QueueKeys("queue", "jobs", cluster=True)
    q = RedisJobQueue(None, "jobs", cluster=True)
    every_second = Schedule(name="tick", job="add", queue="jobs", every_ms=1000)
    calls = [
        q._enqueue_call("{}", job_id="0" * 36)[1],
        q._claim_keys(),
        q._reclaim_call(10)[1],
        [keys.job("x"), keys.processing, keys.leases, keys.events, keys.events_log, keys.worker_jobs("w")],
        [keys.key_holders_prefix + "acme", keys.key_waiting_prefix + "acme", keys.limits_log],
        keys.all_static(),
        ScheduleStore(q).tick_call(every_second, 0, 0, plan(every_second, 0, 0))[1],
        ScheduleStore(q).due_call()[1],
    ]
    for key_list in calls:
        assert {key_slot(k.encode()) for k in key_list} == {key_slot(b"jobs")}, key_list
    registry = GlobalKeys("queue", cluster=True)
    assert {key_slot(k.encode()) for k in (registry.workers, registry.worker("w1"), registry.worker_prefix)} == {
        key_slot(b"queue")
    }
    # Single-node keys stay the seed's: no hash tag.
    assert QueueKeys("queue", "jobs").pending == "queue:jobs:pending"
    assert keys.pending == "queue:{jobs}:pending" and registry.workers == "{queue}:workers"


def test_each_queue_lives_on_its_own_primary(cluster, cc, spread):
    for name in spread:
        q = RedisJobQueue(cc, name, cluster=True, visibility_ms=2000)
        ids = q.enqueue_many([{"n": n} for n in range(3)], name="add")
        q.enqueue({"later": True}, delay_ms=60_000)
        job = q.claim(timeout_ms=500, worker_id="w1")
        assert job is not None and job.id == ids[0]
        assert q.complete(job, {"ok": True})
        assert q.stats()["completed_total"] == 1
    for port in cluster.primary_ports():
        held = {k.split("{")[1].split("}")[0] for k in cluster.node(port).keys("queue:*")}
        assert held == {n for n in spread if cluster.primary_for_queue(n) == port}, (port, held)
        assert all(k.startswith(f"queue:{{{n}}}:") for n in held for k in cluster.node(port).keys(f"*{{{n}}}*"))


def test_every_operation_runs_on_a_cluster(cc, spread):
    """Each Lua script once, through the engine, on a queue of each primary."""
    for name in spread:
        q = RedisJobQueue(cc, name, cluster=True, visibility_ms=1000, max_attempts=2, backoff_base_seconds=0)
        a, b, c, d = q.enqueue_many([{"n": n} for n in range(4)], name="add")
        unique = q.enqueue({"u": 1}, unique_key="only-one")
        assert q.enqueue({"u": 2}, unique_key="only-one") == unique
        job = q.claim_nowait("w1")
        assert job.id == a and q.touch(job) is not None
        assert q.fail_outcome(job, "first try") is Outcome.RETRYING
        job = q.claim_nowait("w1")
        assert job.id == b and q.requeue(job, delay_ms=1) is Outcome.OK
        job = q.claim_nowait("w1")
        assert job.id == c and q.fail_outcome(job, "fatal", terminal=True) is Outcome.FAILED
        assert q.retry(c) is Outcome.OK
        assert q.delete(d) is Outcome.OK
        held = q.claim_nowait("lost-worker")
        assert q.reclaim_worker_jobs(["lost-worker"]) == [held.id]
        q.sweep()  # promotes the requeued job once its 1 ms is up (unless a claim did)
        done = []
        while (job := q.claim(timeout_ms=200, worker_id="w2")) is not None:
            assert q.complete(job, job.payload)
            done.append(job.id)
        assert {a, b, c, unique} <= set(done)
        stats = q.stats()
        assert stats["pending_depth"] == stats["processing_depth"] == 0
        assert stats["deleted_total"] == 1
        assert q.replay([a, b]) == 2  # a pipeline of retry scripts
        assert q.scan("pending")[1] == [a, b]
        assert q.pause("out") == "out" and q.claim_nowait("w3") is None
        assert q.resume("out") == "none" and q.claim_nowait("w3") is not None


def test_flow_limits_and_concurrency_keys_run_on_a_cluster(cc, spread):
    """The limits' keys (the rate's window, the freed slots, a key's holders
    and waiting jobs) live in the queue's slot: claims, waits and releases
    run on the queue's own primary."""
    for name in spread:
        q = RedisJobQueue(cc, name, cluster=True, visibility_ms=5000, limits=FlowLimits(1, Rate(10, 1000)))
        key = {"concurrency_key": "acme", "concurrency": "1"}
        first = q.enqueue({"n": 1})
        q.enqueue({"n": 2})
        job = q.claim_nowait("w1")
        assert job.id == first and q.claim_nowait("w1") is None  # the one slot is held
        set_limits(cc, q.keys, who="test", global_concurrency=5)
        waiting = [q.enqueue({"k": n}, extra=key) for n in range(2)]
        got = q.claim_many(5, "w1", start=5)
        assert waiting[0] in [j.id for j in got] and waiting[1] not in [j.id for j in got]
        for j in got:
            assert q.complete(j, None)  # hands acme's waiting job back
        assert q.claim(timeout_ms=500, worker_id="w1").id == waiting[1]
        assert q.complete(job, None)


def test_schedules_on_three_primaries_run_from_one_scheduler_each_tick_once(cc, spread):
    queues = {name: RedisJobQueue(cc, name, cluster=True) for name in spread}
    schedules = {
        name: [Schedule(name="tick", job="add", queue=name, every_ms=1000, overlap="allow")] for name in spread
    }
    scheduler = Scheduler(queues, schedules, threading.Event())
    scheduler.sync()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(cc.llen(queues[n].keys.schedule_runs("tick")) < 3 for n in spread):
        scheduler.run_once()  # one pipeline: a script call per primary's queue, grouped by node
        time.sleep(0.5)
    for name, q in queues.items():
        ticks = [
            int(cc.hget(q.keys.job(i), "scheduled_for_ms")) for i in cc.lrange(q.keys.schedule_runs("tick"), 0, -1)
        ]
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), (name, ticks)
        assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1, 1000)), (name, ticks)


def test_scripts_are_reloaded_after_script_flush_on_every_node(cluster, cc, spread):
    queues = [RedisJobQueue(cc, n, cluster=True) for n in spread]
    queues[0].enqueue({"warm": True})
    for port in cluster.ports:
        cluster.node(port).script_flush()
    assert queues[0].enqueue({"single": True})  # EVALSHA -> NOSCRIPT -> EVAL
    for port in cluster.ports:
        cluster.node(port).script_flush()
    assert len(queues[1].enqueue_many([{"n": n} for n in range(5)])) == 5  # a pipeline, NOSCRIPT in it
    for port in cluster.ports:
        cluster.node(port).script_flush()
    assert queues[2].sweep().promoted == 0


def test_one_pipeline_of_script_calls_spans_the_primaries_in_call_order(cluster, cc, spread):
    queues = [RedisJobQueue(cc, n, cluster=True) for n in spread]
    for q in queues:
        q.enqueue({"warm": True})  # the script is cached on each primary: no NOSCRIPT below
    calls = [queues[i % 3]._enqueue_call(f'{{"i": {i}}}', name="add") for i in range(30)]
    before = cluster.commandstats().get("evalsha", 0)
    results = scripts.run_pipeline(cc, calls)
    assert results == [1] * 30  # each added
    for i, q in enumerate(queues):  # each queue's jobs pending in call order (LPUSH: the first is the tail)
        assert cc.lrange(q.keys.pending, 0, -1)[::-1][1:] == [call[2][1] for call in calls[i::3]]
    assert cluster.commandstats().get("evalsha", 0) - before == 30
    for q in queues:
        assert q.stats()["pending_depth"] == 11, q.queue_name


def test_enqueue_with_replicas_waits_on_the_queues_own_primary(cc, spread):
    q = RedisJobQueue(cc, spread[0], cluster=True)
    assert q.enqueue({"safe": True}, replicas=1, replication_timeout_ms=5000)
    assert len(q.enqueue_many([{"n": n} for n in range(10)], replicas=1, replication_timeout_ms=5000)) == 10
    with pytest.raises(ReplicationError) as caught:
        q.enqueue({"two": True}, replicas=2, replication_timeout_ms=100)  # each primary has one replica
    assert caught.value.acknowledged == 1 and caught.value.wanted == 2


def test_events_are_sharded_and_reach_a_subscriber_on_each_primary(cluster, cc, spread):
    queues = [RedisJobQueue(cc, n, cluster=True) for n in spread]
    pubsub = jq_cluster.pubsub(cc)
    pubsub.subscribe(*(q.keys.events for q in queues))
    # A classic SUBSCRIBE on every node sees nothing: SPUBLISH stays on its shard.
    classic = [cluster.node(p).pubsub() for p in cluster.ports]
    for ps in classic:
        ps.subscribe(*(q.keys.events for q in queues))
    subscribed = set()
    while len(subscribed) < 3:
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "subscribe":
            subscribed.add(message["channel"])
    ids = {q.enqueue({"n": 1}, name="add"): q.queue_name for q in queues}
    seen = {}
    wait_for(lambda: _drain(pubsub, seen) and len(seen) == 3, what="three sharded events")
    assert seen == {i: ("enqueued", q) for i, q in ids.items()}
    for ps in classic:
        messages = [m for m in iter(lambda ps=ps: ps.get_message(timeout=0.05), None) if m["type"] == "message"]
        assert messages == []
        ps.close()
    pubsub.close()


def _drain(pubsub, seen: dict) -> bool:
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        if message["type"] == "message":
            event = json.loads(message["data"])
            seen[event["id"]] = (event["event"], event["queue"])
    return True


def test_the_django_api_and_an_in_process_worker_on_a_cluster(cluster, cc, spread, jobq_settings):
    jobq_settings(REDIS_URL=cluster.url, CLUSTER=True, QUEUES={n: {} for n in spread})
    ids = {enqueue("add", {"a": i, "b": 1}, queue=spread[i % 3]): spread[i % 3] for i in range(9)}
    worker = Worker(spread, burst=True, concurrency=2)
    assert worker.run(install_signals=False) == 0
    assert worker.stats.completed == 9
    for job_id, name in ids.items():
        assert cc.hget(QueueKeys("queue", name, cluster=True).job(job_id), "status") == "completed"
    assert cc.zcard(GlobalKeys("queue", cluster=True).workers) == 0  # registered, then left


def test_awaited_enqueues_on_a_cluster(cluster, cc, spread, jobq_settings):
    """aenqueue and aenqueue_many on redis.asyncio's cluster client, each queue
    on its own primary; with replicas, through the synchronous path (WAIT
    needs the writes' own connection)."""
    jobq_settings(REDIS_URL=cluster.url, CLUSTER=True, QUEUES={n: {} for n in spread})

    async def enqueue_everywhere() -> list[tuple[str, str]]:
        written = []
        for name in spread:
            written.append((await aenqueue("add", {"a": 1, "b": 1}, queue=name), name))
            written += [(i, name) for i in await aenqueue_many("add", [{"a": 2, "b": 2}] * 3, queue=name)]
        written.append((await aenqueue("add", {"a": 3, "b": 3}, queue=spread[0], replicas=1), spread[0]))
        return written

    written = asyncio.run(enqueue_everywhere())
    assert len(written) == 13
    for job_id, name in written:
        assert cc.hget(QueueKeys("queue", name, cluster=True).job(job_id), "status") == "pending"


# ------------------------------------------------------------- failovers


def run_through_failover(
    tmp_path,
    ledger,
    ledger_url,
    *,
    kill: bool,
    per_queue: int,
    sleep: float,
    workers: int = 2,
    failovers: int = 1,
    jobq_settings=None,
) -> dict:
    """Enqueue ``per_queue`` jobs on three queues (three primaries), run
    worker processes, fail over a queue's primary ``failovers`` times, evenly
    spread over the run (SIGKILL when ``kill``, else CLUSTER FAILOVER), wait
    for every job to complete, and return what the ledger says."""
    with LocalCluster(primaries=3, replicas=1) as cluster:
        names = cluster.queue_names_on_distinct_primaries(3)
        client = cluster.client()
        ids = enqueue_jobs(client, names, per_queue, sleep=sleep, cluster=True)
        cluster.wait_replicated()  # enqueued and on the replicas: a failover cannot lose them
        completed = None
        if jobq_settings is not None:
            jobq_settings(REDIS_URL=cluster.url, CLUSTER=True, QUEUES={n: {} for n in names})
            completed = CompletedSignals(names)
        env = cluster_worker_env(cluster.url, names, ledger_url, JOBQUEUE_TEST_CLUSTER="1")
        procs = []
        for i in range(workers):
            # Queues are served in priority order: each worker puts another first,
            # so every queue is busy when its primary fails.
            order = names[i % len(names) :] + names[: i % len(names)]
            args = [a for n in order for a in ("--queue", n)]
            procs.append(start_logged_worker(env, str(tmp_path / f"worker{i}.log"), *args))
        failed_over = []
        try:
            for round_ in range(failovers):
                target = names[round_ % len(names)]
                due = (round_ + 1) * per_queue // (failovers + 2)
                wait_for(
                    lambda target=target, due=due: Ledger(ledger.lrange(Ledger.KEY, 0, -1)).runs_of(target) >= due,
                    timeout=60,
                    interval=0.1,
                    what=f"{due} jobs of {target} to run",
                )
                victim = cluster.primary_for_queue(target)
                ledger.rpush(Ledger.KEY, Ledger.FAILOVER)
                if kill:
                    replicas = cluster.replicas_of(victim)
                    cluster.kill(victim)
                    new = cluster.wait_failed_over(victim, replicas)
                else:
                    new = cluster.manual_failover(victim)
                ledger.rpush(Ledger.KEY, Ledger.RECOVERED)
                failed_over.append((target, victim, new))
                if kill and round_ < failovers - 1:
                    cluster.restart(victim)  # back as a replica, so the next round has one
            all_ids = [(n, i) for n in names for i in ids[n]]
            try:
                wait_for(
                    lambda: collections.Counter(job_statuses(client, all_ids)).get("completed") == len(all_ids),
                    timeout=120,
                    interval=0.2,
                    what="every job to complete",
                )
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: {stuck_jobs(client, all_ids)}; failovers {failed_over}; {cluster.describe(names)}"
                ) from None
            statuses = job_statuses(client, all_ids, fields=("additional_deliveries", "attempts"))
            if completed is not None:
                wait_for(
                    lambda: completed.seen >= {i for _n, i in all_ids}, timeout=30, what="a completed event per job"
                )
        finally:
            codes = [stop_worker(p) for p in procs]
            if completed is not None:
                completed.stop()
            client.close()
    logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(workers))
    assert codes == [0] * workers, logs[-3000:]
    report = Ledger(ledger.lrange(Ledger.KEY, 0, -1))
    return {
        "names": names,
        "ids": ids,
        "report": report,
        "redelivered": {i for i, (extra, attempts) in statuses.items() if int(extra or 0) or int(attempts or 0) > 1},
        "failed_over": failed_over,
        "logs": logs,
    }


def stuck_jobs(client, all_ids) -> str:
    """What the jobs that did not complete look like, for a failure message."""
    statuses = job_statuses(client, all_ids)
    stuck = [job for job, status in zip(all_ids, statuses, strict=True) if status != "completed"]
    sample = {}
    for name, job_id in stuck[:3]:
        sample[job_id] = client.hgetall(QueueKeys("queue", name, cluster=True).job(job_id))
    lists = {
        name: {k: client.llen(getattr(QueueKeys("queue", name, cluster=True), k)) for k in ("pending", "processing")}
        for name in {n for n, _i in all_ids}
    }
    return f"{collections.Counter(statuses)}; lists {lists}; e.g. {sample}"


def check(outcome: dict, *, lossless: bool) -> dict[str, int]:
    report: Ledger = outcome["report"]
    names = outcome["names"]
    every = {i for n in names for i in outcome["ids"][n]}
    assert set(report.runs()) == every  # every job ran, and nothing else did
    duplicates = report.duplicates()
    failed_queues = {target for target, _old, _new in outcome["failed_over"]}
    # Only jobs of a queue whose primary failed ever run twice...
    assert {report.queue_of(i) for i in duplicates} <= failed_queues
    for job_id in duplicates:
        # ...and only jobs that were running when it failed, whose lease ran out
        # (or whose claim or completion was lost with the primary).
        assert report.first_run(job_id) < report.last_recovery(), job_id
        if lossless:
            assert job_id in outcome["redelivered"], job_id
    counts = {"jobs": len(every), "runs": sum(report.runs().values()), "duplicates": len(duplicates)}
    print(f"\n{outcome['failed_over']}: {counts}")
    return counts


def test_coordinated_failover_mid_run_loses_nothing(tmp_path, r, redis_server, jobq_settings):
    """CLUSTER FAILOVER on the replica of a busy primary: the replica catches up
    before it takes over, so no acknowledged write is lost; every job runs once
    (a rerun would need a lease lost in the switch), and an events listener in
    this process follows its shard to the new primary."""
    outcome = run_through_failover(
        tmp_path, r, redis_server.url, kill=False, per_queue=100, sleep=0.1, jobq_settings=jobq_settings
    )
    counts = check(outcome, lossless=True)
    assert counts["jobs"] == 300


@pytest.mark.timeout(240)  # room for the wait of every job (120 s) to say which jobs are stuck, and where
def test_primary_killed_mid_run_every_job_completes(tmp_path, r, redis_server):
    """SIGKILL a busy primary: its replica takes over within about two node
    timeouts, the workers follow, and every job completes. Reruns happen only
    on that primary's queue, for jobs that were running when it died."""
    outcome = run_through_failover(tmp_path, r, redis_server.url, kill=True, per_queue=100, sleep=0.1)
    counts = check(outcome, lossless=False)
    assert counts["duplicates"] <= 2 * 8 + 8  # in flight (2 workers x 4), plus claims lost with the primary


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_kills_under_load(tmp_path, r, redis_server):
    """Longer: 3000 jobs, three workers, a SIGKILLed primary per queue in turn."""
    outcome = run_through_failover(
        tmp_path, r, redis_server.url, kill=True, per_queue=1000, sleep=0.01, workers=3, failovers=3
    )
    counts = check(outcome, lossless=False)
    assert counts["jobs"] == 3000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_coordinated_failovers_under_load(tmp_path, r, redis_server, jobq_settings):
    outcome = run_through_failover(
        tmp_path,
        r,
        redis_server.url,
        kill=False,
        per_queue=1000,
        sleep=0.01,
        workers=3,
        failovers=3,
        jobq_settings=jobq_settings,
    )
    counts = check(outcome, lossless=True)
    assert counts["jobs"] == 3000
