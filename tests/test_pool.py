"""jobq_worker --processes N: several worker processes from one command, kept running."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from django_jobqueue import enqueue
from django_jobqueue.worker import supervisor
from django_jobqueue.worker.supervisor import WorkerPool
from django_jobqueue.worker.worker import SAME_SIGNAL_S
from tests.helpers.waiting import wait_for
from tests.helpers.workers import run_worker, start_worker, stop
from tests.testapp.jobs import RUNS, runs


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(r) -> set[int]:
    """The pids of the workers registered now (from their records)."""
    return {int(r.hget(f"queue:worker:{wid}", "pid") or 0) for wid in r.zrange("queue:workers", 0, -1)} - {0}


def worker_states(r) -> list[str]:
    """The state each registered worker's record gives ("running", "stopping")."""
    return sorted(r.hget(f"queue:worker:{wid}", "state") or "" for wid in r.zrange("queue:workers", 0, -1))


def two_workers(r, besides: frozenset[int] = frozenset()) -> set[int] | None:
    pids = worker_pids(r) - besides
    return pids if len(pids) == 2 else None


def test_two_processes_share_the_queue_and_exit_when_it_is_drained(r, redis_server):
    # Long enough in all (6 s for one process alone) that both processes are up while jobs are left.
    ids = [enqueue("sleepy", {"seconds": 0.1}) for _ in range(60)]
    done = run_worker(redis_server.url, "--processes", "2", "--concurrency", "2", "--burst", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("burst: ") == 2  # one summary per process
    assert all(r.hget(f"queue:jobs:job:{i}", "status") == "completed" for i in ids)
    ran_in = {entry.split(":")[1] for entry in r.lrange(RUNS, 0, -1)}
    assert len(ran_in) == 2 and str(os.getpid()) not in ran_in  # two worker processes, neither this one


def test_a_killed_process_is_replaced_and_sigterm_stops_them_all(r, redis_server):
    proc = start_worker(redis_server.url, "--processes", "2", "--concurrency", "1")
    try:
        first = wait_for(lambda: two_workers(r), what="two workers")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        later = wait_for(
            lambda: two_workers(r, besides=frozenset({victim})), timeout=30, what="a process in the killed one's place"
        )
        assert later - first and (first - {victim}) <= later
        job_id = enqueue("add", {"a": 2, "b": 3})  # the pool still serves the queue
        wait_for(lambda: r.hget(f"queue:jobs:job:{job_id}", "status") == "completed", what="the job to run")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "process 0" in err or "process 1" in err  # the pool said what it did
    assert "ended (signal 9)" in err
    assert not any(alive(pid) for pid in later)
    # The live ones deregistered on their way out; the killed one's record goes by the lapsed-worker sweep.
    assert worker_pids(r) <= {victim}


def test_the_processes_stop_when_the_pool_is_killed(r, redis_server):
    proc = start_worker(redis_server.url, "--processes", "2", "--concurrency", "1")
    try:
        pids = wait_for(lambda: two_workers(r), what="two workers")
        proc.kill()  # SIGKILL: the pool cannot pass anything on
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30, what="the orphans to shut down")
    finally:
        stop(proc)
    assert r.zcard("queue:workers") == 0  # they shut down cleanly, not died


@pytest.mark.parametrize(
    "first, gap_s",
    [("pool", 0.0), ("processes", SAME_SIGNAL_S + 0.5)],
    ids=["at once", "the pool's copy late"],
)
def test_a_signal_that_reaches_the_processes_directly_and_through_the_pool_is_one_request(
    r, redis_server, first, gap_s
):
    # systemd's default KillMode signals every process of the service at once;
    # the pool passes its copy on whenever it gets to it (late on a loaded
    # machine), and the processes count it once however late.
    proc = start_worker(redis_server.url, "--processes", "2", "--concurrency", "1")
    try:
        pids = wait_for(lambda: two_workers(r), what="two workers")
        job_id = enqueue("sleepy", {"seconds": 1.5 + gap_s})
        # Its handler running, not only claimed: a job claimed but not begun when
        # the stop comes is handed back unrun (released), by design.
        wait_for(lambda: runs(r, job_id, "start"), what="the job to start")

        def to_the_pool():
            proc.send_signal(signal.SIGTERM)

        def to_the_processes():
            for pid in pids:
                os.kill(pid, signal.SIGTERM)

        one, other = (to_the_pool, to_the_processes) if first == "pool" else (to_the_processes, to_the_pool)
        one()
        time.sleep(gap_s)
        other()
        out, err = proc.communicate(timeout=60)  # no further signal
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert "exiting at once" not in err
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "completed"  # finished within the grace period


def test_two_signals_to_the_pool_make_the_processes_exit_at_once(r, redis_server):
    proc = start_worker(redis_server.url, "--processes", "2", "--concurrency", "1")
    try:
        wait_for(lambda: two_workers(r), what="two workers")
        job_id = enqueue("sleepy", {"seconds": 30})
        wait_for(lambda: r.hget(f"queue:jobs:job:{job_id}", "status") == "processing", what="the job to start")
        proc.send_signal(signal.SIGTERM)
        # Both heard the first (their heartbeats say so) before the second is sent:
        # two signals close together could reach the pool as one.
        wait_for(lambda: worker_states(r) == ["stopping", "stopping"], what="both processes to be stopping")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 1, err
    assert err.count("exiting at once") >= 1
    assert r.hget(f"queue:jobs:job:{job_id}", "status") == "processing"  # its lease brings it back


def test_bad_options_fail_in_the_parent_before_any_process_starts(redis_server):
    done = run_worker(redis_server.url, "--processes", "2", "--queue", "nosuch")
    assert done.returncode != 0
    assert "nosuch" in done.stderr and "process 0 started" not in done.stderr
    done = run_worker(redis_server.url, "--processes", "0")
    assert done.returncode != 0 and "--processes must be at least 1" in done.stderr


# The supervisor on its own, with stand-in children (no Redis, no Django).


def test_a_child_that_fails_at_start_up_stops_the_pool_with_its_code():
    started = time.monotonic()
    code = WorkerPool([sys.executable, "-c", "import sys; sys.exit(3)"], 2).run(install_signals=False)
    assert code == 3
    assert time.monotonic() - started < supervisor.STARTUP_S + 5  # no endless restarts


def test_a_child_that_dies_after_a_good_start_is_started_again(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "STARTUP_S", 0.3)  # "a good start" is 0.3 s here
    marks = tmp_path / "starts"
    # Three starts die after a good start (exit 2); the fourth runs until it is
    # stopped and then exits cleanly, as jobq_worker does on the pool's stop
    # signal. The pool is stopped only once the fourth runs, so where the stop
    # lands cannot matter.
    script = (
        "import os, signal, time\n"
        f"signal.signal({int(supervisor.POOL_STOP_SIGNAL)}, lambda *a: os._exit(0))\n"
        f"with open({str(marks)!r}, 'a') as f: f.write('x')\n"
        f"if len(open({str(marks)!r}).read()) <= 3: time.sleep(0.4); os._exit(2)\n"
        "time.sleep(60)\n"
    )
    p = WorkerPool([sys.executable, "-c", script], 1)

    def stop_once_the_fourth_runs():
        try:
            wait_for(lambda: marks.exists() and len(marks.read_text()) >= 4, timeout=30, what="a fourth start")
        finally:
            p.stop()  # in any case: the assertions below say what happened

    stopper = threading.Thread(target=stop_once_the_fourth_runs, daemon=True)
    stopper.start()
    code = p.run(install_signals=False)
    stopper.join(5)
    assert len(marks.read_text()) == 4  # died after a good start each time: started again (0.5 s pauses)
    assert code == 0  # stopped on request, the running child exited cleanly


def test_processes_must_be_positive():
    with pytest.raises(ValueError):
        WorkerPool(["true"], 0)
