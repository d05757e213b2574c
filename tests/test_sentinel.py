"""Sentinel: one primary, one replica and three sentinels of ours (tests/helpers/cluster.py),
with passwords on the data nodes and on the sentinels.

Workers find the primary through the sentinels (redis-py's ``Sentinel.master_for``);
when the primary is SIGKILLed mid-run the sentinels promote the replica within a
few seconds and the workers carry on against it. Replication is asynchronous, so
what the dead primary had not passed on is lost: the jobs whose completion (or
claim) was lost run again; each is counted, and no other job runs twice.

The settings of the three topologies (one Redis, Sentinel, Cluster) are checked
here too.
"""

from __future__ import annotations

import asyncio
import collections

import pytest
import redis

from django_jobqueue import aenqueue, get_queue
from django_jobqueue.conf import validate
from django_jobqueue.connection import build_client, describe, get_client
from django_jobqueue.queue import RedisJobQueue
from tests.helpers.cluster import (
    CompletedSignals,
    Ledger,
    LocalSentinelGroup,
    cluster_worker_env,
    enqueue_jobs,
    job_statuses,
)
from tests.helpers.config import problems
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_logged_worker, stop_worker

PASSWORD = "primary-secret"  # noqa: S105 - a throwaway server's
SENTINEL_PASSWORD = "sentinel-secret"  # noqa: S105


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "value, path, fragment",
    [
        ({"SENTINELS": [("h", 26379)]}, "JOBQUEUE['SENTINEL_SERVICE']", "must name"),
        ({"SENTINELS": [("h", "26379")], "SENTINEL_SERVICE": "m"}, "JOBQUEUE['SENTINELS']", "pairs"),
        ({"SENTINEL_OPTIONS": {"password": "x"}}, "JOBQUEUE['SENTINEL_OPTIONS']", "only used with SENTINELS"),
        (
            {"SENTINELS": [("h", 1)], "SENTINEL_SERVICE": "m", "SENTINEL_OPTIONS": "pw"},
            "JOBQUEUE['SENTINEL_OPTIONS']",
            "a dict",
        ),
        ({"SENTINELS": [("h", 1)], "SENTINEL_SERVICE": "m", "CLUSTER": True}, "JOBQUEUE['CLUSTER']", "SENTINELS"),
        ({"CLUSTER": True, "CACHE_ALIAS": "default"}, "JOBQUEUE['CLUSTER']", "CACHE_ALIAS"),
        ({"SENTINELS": [("h", 1)], "SENTINEL_SERVICE": "m", "CACHE_ALIAS": "x"}, "JOBQUEUE['SENTINELS']", "CACHE"),
        ({"CLUSTER": True, "REDIS_URL": "redis://h:7000/2"}, "JOBQUEUE['REDIS_URL']", "database 0"),
        ({"CLUSTER": True, "REDIS_URL": "unix:///tmp/r.sock"}, "JOBQUEUE['REDIS_URL']", "redis:// or rediss://"),
    ],
)
def test_topology_settings_are_checked(value, path, fragment):
    found = problems(value)
    assert any(p == path and fragment in msg for p, msg in found), found


def test_valid_topologies():
    assert problems({"CLUSTER": True, "REDIS_URL": "redis://10.0.0.1:7000/0"}) == []
    assert problems({"CLUSTER": True, "REDIS_URL": "rediss://user:pw@node.example:7000"}) == []
    settings, errors = validate(
        {
            "REDIS_URL": "rediss://:pw@ignored/3",
            "SENTINELS": [("s1", 26379), ["s2", 26379]],
            "SENTINEL_SERVICE": "mymaster",
            "SENTINEL_OPTIONS": {"password": "sentinel-pw"},
        }
    )
    assert errors == []
    assert settings.sentinels == (("s1", 26379), ("s2", 26379))
    assert settings.sentinel_options == {"password": "sentinel-pw"}


def test_the_sentinel_client_takes_credentials_from_the_url_and_never_shows_them():
    settings, _ = validate(
        {
            "REDIS_URL": "rediss://app:pw@ignored/3",
            "SENTINELS": [("127.0.0.1", 1)],
            "SENTINEL_SERVICE": "mymaster",
            "SENTINEL_OPTIONS": {"password": "sentinel-pw"},
            "REDIS_OPTIONS": {"db": 4},
        }
    )
    client = build_client(settings)  # connects lazily: nothing is reached here
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "pw", 4)  # REDIS_OPTIONS win
    assert client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["password"] == "sentinel-pw"
    text = describe(settings)
    assert text == "sentinel service 'mymaster' via 127.0.0.1:1" and "pw" not in text
    client.close()


# ------------------------------------------------------------------ a group


@pytest.fixture
def group():
    with LocalSentinelGroup(password=PASSWORD, sentinel_password=SENTINEL_PASSWORD) as g:
        yield g


def sentinel_settings(group, queues):
    return {
        "REDIS_URL": f"redis://:{PASSWORD}@mymaster/0",
        "SENTINELS": group.sentinels,
        "SENTINEL_SERVICE": group.service,
        "SENTINEL_OPTIONS": {"password": SENTINEL_PASSWORD},
        "QUEUES": {q: {"VISIBILITY_MS": 2000} for q in queues},
    }


def test_the_client_finds_the_primary_through_the_sentinels(group, jobq_settings):
    jobq_settings(**sentinel_settings(group, ["jobs"]))
    client = get_client()
    client.set("test:where", "here")
    assert group.node(group.current_primary()).get("test:where") == "here"
    q = RedisJobQueue(client, "jobs")
    job_id = q.enqueue({"n": 1}, replicas=1, replication_timeout_ms=5000)  # WAIT for the replica
    group.wait_replicated()
    replica = next(p for p in group.servers if p != group.current_primary())
    assert group.node(replica).hget(q.keys.job(job_id), "status") == "pending"


def test_an_awaited_enqueue_finds_the_primary_through_the_sentinels(group, jobq_settings):
    """aenqueue on redis.asyncio's Sentinel client, with the same settings
    (the sentinels' own password, the primary's credentials from the URL)."""
    jobq_settings(**sentinel_settings(group, ["jobs"]))
    job_id = asyncio.run(aenqueue("add", {"a": 1, "b": 2}, replicas=1, replication_timeout_ms=5000))
    group.wait_replicated()
    replica = next(p for p in group.servers if p != group.current_primary())
    assert group.node(replica).hget(get_queue("jobs").keys.job(job_id), "status") == "pending"


def run_through_kill(tmp_path, ledger, ledger_url, group, *, per_queue, sleep, kills=1, jobq_settings=None):
    names = ["s0", "s1"]
    settings = sentinel_settings(group, names)
    client = redis.sentinel.Sentinel(group.sentinels, sentinel_kwargs={"password": SENTINEL_PASSWORD}).master_for(
        group.service, password=PASSWORD, decode_responses=True, socket_timeout=2
    )
    ids = enqueue_jobs(client, names, per_queue, sleep=sleep, cluster=False)
    group.wait_replicated()  # the jobs are on the replica: the kill cannot lose them
    completed = None
    if jobq_settings is not None:
        jobq_settings(**settings)
        completed = CompletedSignals(names)
    env = cluster_worker_env(
        f"redis://:{PASSWORD}@mymaster/0",
        names,
        ledger_url,
        JOBQUEUE_TEST_SENTINELS=",".join(f"{h}:{p}" for h, p in group.sentinels),
        JOBQUEUE_TEST_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
    )
    args = [a for n in names for a in ("--queue", n)]
    procs = [start_logged_worker(env, str(tmp_path / f"worker{i}.log"), *args) for i in range(2)]
    all_ids = [(n, i) for n in names for i in ids[n]]
    failovers = []
    try:
        for round_ in range(kills):
            wait_for(
                lambda n=round_: ledger.llen(Ledger.KEY) >= (n + 1) * per_queue * 2 // (kills + 1),
                timeout=60,
                what="jobs to run",
            )
            old = group.current_primary()
            ledger.rpush(Ledger.KEY, Ledger.FAILOVER)
            group.kill(old)
            new = group.wait_for_new_primary(old)
            ledger.rpush(Ledger.KEY, Ledger.RECOVERED)
            failovers.append((old, new))
            if round_ < kills - 1:
                group.restart(old)  # back as a replica of the new primary
        wait_for(
            lambda: collections.Counter(job_statuses(client, all_ids, cluster=False)).get("completed") == len(all_ids),
            timeout=120,
            interval=0.2,
            what="every job to complete",
        )
        report = Ledger(ledger.lrange(Ledger.KEY, 0, -1))
        if completed is not None:
            # Jobs claimed after the failover were completed on the new
            # primary: the listener, back on it, fires their signal.
            after = {i for i in report.runs() if report.first_run(i) > report.last_recovery()}
            wait_for(lambda: completed.seen >= after, timeout=30, what="completed signals from the new primary")
    finally:
        codes = [stop_worker(p) for p in procs]
        if completed is not None:
            completed.stop()
        client.close()
    logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert codes == [0, 0], logs[-3000:]
    assert set(report.runs()) == {i for _n, i in all_ids}  # every job ran, nothing else did
    duplicates = report.duplicates()
    for job_id in duplicates:
        assert report.first_run(job_id) < report.last_recovery(), job_id  # it was running at a kill
    counts = {"jobs": len(all_ids), "runs": sum(report.runs().values()), "duplicates": len(duplicates)}
    print(f"\nsentinel failovers {failovers}: {counts}")
    return counts


def test_workers_carry_on_when_the_primary_is_killed(tmp_path, r, redis_server, group, jobq_settings):
    counts = run_through_kill(
        tmp_path, r, redis_server.url, group, per_queue=100, sleep=0.05, jobq_settings=jobq_settings
    )
    assert counts["jobs"] == 200
    assert counts["duplicates"] <= 2 * 8 + 8  # in flight (2 workers x 4), plus claims lost with the primary


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_failover_and_back_under_load(tmp_path, r, redis_server, group, jobq_settings):
    """Longer: 2000 jobs; kill the primary, bring it back as a replica, kill the new one."""
    counts = run_through_kill(
        tmp_path, r, redis_server.url, group, per_queue=1000, sleep=0.005, kills=2, jobq_settings=jobq_settings
    )
    assert counts["jobs"] == 2000
