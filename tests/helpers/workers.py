"""Workers for the tests: in this process (``drain``, a fetcher the test drives)
and as real ``manage.py jobq_worker`` processes against the test Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker import Worker
from django_jobqueue.worker.fetcher import Fetcher
from tests.helpers.paths import ROOT

# ------------------------------------------------------------- in this process


def drain(*queues: str, **options: Any) -> Worker:
    """Run a burst worker on ``queues`` (the default queue if none) until they
    are empty; the worker, for its stats."""
    worker = Worker(list(queues) or None, burst=True, **options)
    assert worker.run(install_signals=False) == 0
    return worker


def driven_fetcher(*queues: RedisJobQueue, worker_id: str = "w1", **options: Any) -> Fetcher:
    """A fetcher for ``queues`` that never blocks, driven by the test as runner
    threads would; ``options`` go to Fetcher (prefetch, limit, on_lost, ...)."""
    return Fetcher(
        list(queues),
        worker_id,
        block=False,
        block_ms=0,
        on_claimed=lambda queue, jobs: None,
        on_acked=lambda acked: None,
        **options,
    )


# -------------------------------------------------------------- as processes


def worker_env(redis_url: str, settings_module: str = "tests.settings", **extra: str) -> dict[str, str]:
    """The environment of a worker process on ``settings_module``, using ``redis_url``."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = settings_module
    env["JOBQUEUE_TEST_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_worker(redis_url: str, *args: str, settings_module: str = "tests.settings") -> subprocess.Popen[str]:
    """A worker process whose output the test reads when it stops (``stop``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "django", "jobq_worker", *args],
        env=worker_env(redis_url, settings_module),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_worker(redis_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", "jobq_worker", *args],
        env=worker_env(redis_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str, str]:
    """Send ``sig``; the exit code and everything the worker printed."""
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def start_logged_worker(env: dict[str, str], log_path: str | Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker process with ``env`` whose output goes to ``log_path``, which the
    test can read while it runs (a file, not a pipe: a long run must never block
    on a full pipe)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "django", "jobq_worker", *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM, then the exit code (SIGKILL if it does not exit in ``timeout`` s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def listen_to_one_event(redis_url: str, log_path: Path, *args: str, sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Run ``manage.py jobq_events -v 2 --queue jobs *args`` (its log in
    ``log_path``) until it has fired the event of one job enqueued here, then
    stop it with ``sig`` and check it exits 0: (the job's id, the log)."""
    from django_jobqueue import enqueue
    from tests.helpers.waiting import wait_for

    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "jobq_events", "-v", "2", "--queue", "jobs", *args],
            env=worker_env(redis_url),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )
        try:
            wait_for(lambda: "subscribed; firing signals" in log_path.read_text(), what="the subscription")
            job_id = enqueue("add", {"a": 1, "b": 1})
            wait_for(lambda: f"event jobs enqueued job {job_id}" in log_path.read_text(), what="the event")
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return job_id, log_path.read_text()
