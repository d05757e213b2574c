"""The shell commands: jobq_stats, jobq_reclaim (jobq_worker is in test_worker.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_jobqueue import enqueue, get_queue
from tests.helpers.commands import command_output
from tests.helpers.paths import ROOT
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_worker, stop, worker_env


def test_jobq_stats_table_and_json(r):
    enqueue("add", {"a": 1, "b": 1})
    enqueue("add", {"a": 1, "b": 1}, delay=60)
    text = command_output("jobq_stats")
    line = next(ln for ln in text.splitlines() if ln.startswith("jobs "))
    assert line.split()[1:6] == ["1", "1", "0", "0", "0"]  # scheduled pending processing completed failed
    assert "no live workers" in text

    data = json.loads(command_output("jobq_stats", "--json", "--queue", "jobs"))
    assert list(data["queues"]) == ["jobs"]
    assert data["queues"]["jobs"]["enqueued_total"] == 2
    assert data["queues"]["jobs"]["oldest_pending_age_ms"] is not None
    assert data["workers"] == []


def test_jobq_stats_lists_live_workers_without_tokens(r, redis_server):
    job_id = enqueue("sleepy", {"seconds": 2})
    proc = start_worker(redis_server.url, "--worker-id", "stats-w")
    try:
        wait_for(lambda: r.hget(f"queue:jobs:job:{job_id}", "status") == "processing", what="the job to start")
        wait_for(lambda: json.loads(r.hget("queue:worker:stats-w", "jobs") or "[]"), what="a heartbeat")
        out = subprocess.run(
            [sys.executable, "-m", "django", "jobq_stats", "--json"],
            env=worker_env(redis_server.url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        stop(proc)
    data = json.loads(out)
    (worker,) = [w for w in data["workers"] if w["id"] == "stats-w"]
    assert worker["queues"] == ["jobs"] and worker["running"] == [["jobs", job_id]]
    token = r.hget(f"queue:jobs:job:{job_id}", "claim_token")
    assert not token or token not in out


def test_jobq_stats_unknown_queue():
    with pytest.raises(CommandError, match="unknown queue 'nope'"):
        command_output("jobq_stats", "--queue", "nope")


def test_jobq_reclaim_once_hands_back_expired_leases(r):
    job_id = enqueue("add", {"a": 1, "b": 1}, queue="fast")
    get_queue("fast").claim_nowait("gone")
    time.sleep(1.3)  # the fast queue's lease is 1.2 s
    out = command_output("jobq_reclaim", "--queue", "fast")
    assert "fast: 1 reclaimed, 0 dead-lettered, 0 expired, 0 promoted" in out
    assert r.lrange("queue:fast:pending", 0, -1) == [job_id]


def test_jobq_reclaim_loop_stops_on_sigterm(redis_server):
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "jobq_reclaim", "--loop", "--interval", "0.1"],
        env=worker_env(redis_server.url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("sweeping")  # its signal handlers are in place
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_jobq_reclaim_bad_interval():
    with pytest.raises(CommandError, match="--interval must be positive"):
        command_output("jobq_reclaim", "--interval", "0")


def test_jobq_jobs_list_show_delete_and_pages(r):
    ids = [enqueue("add", {"a": n, "b": 0}) for n in range(5)]
    out = command_output("jobq_jobs", "list", "pending", "--count", "3")
    assert [line.split()[0] for line in out.splitlines()[:3]] == ids[:3]
    assert "next: --cursor 3" in out
    out = command_output("jobq_jobs", "list", "pending", "--cursor", "3", "--count", "3", "--json")
    data = json.loads(out)
    assert [j["id"] for j in data["jobs"]] == ids[3:] and data["cursor"] == 0
    shown = json.loads(command_output("jobq_jobs", "show", ids[0], "--json"))
    assert shown["id"] == ids[0] and "claim_token" not in shown
    assert "deleted: 1" in command_output("jobq_jobs", "delete", ids[0])
    with pytest.raises(CommandError, match="no job"):
        command_output("jobq_jobs", "show", ids[0])


def test_jobq_jobs_retry_requeue_purge_pause(r):
    from django_jobqueue.worker import Worker

    failed = enqueue("boom", {"message": "x"})
    later = enqueue("add", {"a": 1, "b": 1}, delay=3600)
    Worker(["jobs"], burst=True).run(install_signals=False)
    assert r.hget(f"queue:jobs:job:{failed}", "status") == "failed"
    assert "replayed: 1" in command_output("jobq_jobs", "retry", failed)
    assert r.hget(f"queue:jobs:job:{failed}", "status") == "pending"
    Worker(["jobs"], burst=True).run(install_signals=False)
    assert "replayed: 1" in command_output("jobq_jobs", "retry", "--all-failed")
    assert "requeued: 1" in command_output("jobq_jobs", "requeue", later)
    assert r.lrange("queue:jobs:pending", -1, -1) == [later]  # at the head of the line
    with pytest.raises(CommandError, match="left as they were"):
        command_output("jobq_jobs", "requeue", "f" * 36)
    assert "purged pending: 2 job(s) deleted" in command_output("jobq_jobs", "purge", "pending", "--yes")
    assert r.llen("queue:jobs:pending") == 0
    assert "paused out" in command_output("jobq_jobs", "pause", "out")
    assert "paused none" in command_output("jobq_jobs", "resume")


def run_refused(*args: str) -> str:
    """The output of a command that must exit 1 (CommandError)."""
    out = StringIO()
    with pytest.raises(CommandError, match="left as they were"):
        call_command(*args, stdout=out)
    return out.getvalue()


def test_jobq_jobs_requeue_refuses_a_running_at_most_once_job(r):
    job_id = enqueue("once", {})
    assert get_queue("jobs").claim_nowait("w1").id == job_id
    out = run_refused("jobq_jobs", "requeue", job_id)
    assert f"refused (at-most-once and running: it would run twice): 1 {job_id}" in out
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "processing"


def test_jobq_jobs_retry_refuses_while_another_job_holds_the_unique_key(r):
    q = get_queue("jobs")
    failed = enqueue("boom", {"message": "x"}, unique_key="invoice:1")
    q.fail(q.claim_nowait("w1"), "boom", terminal=True)
    holder = enqueue("add", {}, unique_key="invoice:1")
    label = "refused (another unfinished job holds its unique key)"
    assert f"{label}: 1 {failed}" in run_refused("jobq_jobs", "retry", failed)
    out = run_refused("jobq_jobs", "retry", "--all-failed")
    assert "replayed: 0" in out and f"{label}: 1 {failed}" in out
    assert r.hget(f"queue:jobs:job:{failed}", "status") == "failed"
    assert r.hget("queue:jobs:unique", "invoice:1") == holder


def test_the_worker_log_writes_lines_in_batches_and_warnings_at_once():
    import io
    import logging

    from django_jobqueue.management.logsetup import BatchHandler

    class CountingStream(io.StringIO):
        writes = 0

        def write(self, text):
            self.writes += 1
            return super().write(text)

    stream = CountingStream()
    handler = BatchHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.batch")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for n in range(3):
            log.info("job %d", n)
        assert stream.getvalue() == ""  # waiting for the flusher
        log.warning("trouble")  # goes out at once, after what came before it
        assert stream.getvalue() == "INFO job 0\nINFO job 1\nINFO job 2\nWARNING trouble\n"
        assert stream.writes == 1
        log.info("later")
        handler.flush()
        assert stream.getvalue().endswith("WARNING trouble\nINFO later\n") and stream.writes == 2
    finally:
        log.removeHandler(handler)
