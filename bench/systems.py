"""The systems we measure, as the harness sees them: names, how to start
their workers, and what concurrency they run with.

Nothing here imports a peer's package, so ``--only jobqueue`` needs none of
them. What runs inside the enqueuing process is in ``client.py``; what the
peers' workers import is in ``peers/``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Runner threads per worker process, for every system that runs jobs in threads.
THREADS = 8


def _script(name: str) -> str:
    """A console script of the running interpreter's environment."""
    sibling = Path(sys.executable).parent / name
    if sibling.exists():
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run the benchmark through its venv (python -m bench)")
    return found


@dataclass(frozen=True)
class System:
    key: str  # --only name, and the client's name
    label: str  # the table's column
    packages: tuple[str, ...]  # distributions whose versions the report states
    concurrency: str  # how one worker process runs jobs, for the report
    module: str  # what must import for the system to be measured
    bulk: str | None  # the bulk enqueue API used, or None when there is none
    blocking: bool  # whether the worker blocks on Redis when idle (else: polls)

    def worker_commands(self, processes: int, *, burst: bool, url: str) -> list[list[str]]:
        """argv of each process to start for ``processes`` job-running processes."""
        py = sys.executable
        if self.key == "jobqueue":
            # Warnings only, as every peer is run (--loglevel WARNING, --quiet):
            # no line per job.
            cmd = [py, "-m", "django", "jobq_worker", "--concurrency", str(THREADS), "--verbosity", "0"]
            return [cmd + (["--burst"] if burst else []) for _ in range(processes)]
        if self.key in ("rq-fork", "rq-simple"):
            cmd = [_script("rq"), "worker", "--url", url, "--path", ".", "--logging_level", "WARNING"]
            if self.key == "rq-simple":
                cmd += ["--worker-class", "rq.worker.SimpleWorker"]
            cmd += (["--burst"] if burst else []) + ["bench"]
            return [cmd + ["--name", f"bench-{self.key}-{i}"] for i in range(processes)]
        if self.key == "celery-prefork":
            # One celery worker; its pool children are the job-running processes.
            return [
                [_script("celery"), "-A", "bench.peers.celery_app", "worker", "--pool", "prefork",
                 "--concurrency", str(processes), "--queues", "bench", "--loglevel", "WARNING",
                 "--hostname", "prefork@bench"]
            ]  # fmt: skip
        if self.key == "celery-threads":
            return [
                [_script("celery"), "-A", "bench.peers.celery_app", "worker", "--pool", "threads",
                 "--concurrency", str(THREADS), "--queues", "bench", "--loglevel", "WARNING",
                 "--hostname", f"threads{i}@bench"]
                for i in range(processes)
            ]  # fmt: skip
        if self.key == "dramatiq":
            return [
                [_script("dramatiq"), "bench.peers.dramatiq_app", "--processes", str(processes),
                 "--threads", str(THREADS), "--queues", "bench"]
            ]  # fmt: skip
        if self.key == "huey":
            return [
                [_script("huey_consumer"), "bench.peers.huey_app.huey", "--workers", str(THREADS),
                 "--worker-type", "thread", "--quiet"]
                for _ in range(processes)
            ]  # fmt: skip
        raise ValueError(self.key)


SYSTEMS = [
    System(
        "jobqueue",
        "django-jobqueue",
        ("django-jobqueue", "django", "redis", "hiredis"),
        f"`jobq_worker --concurrency {THREADS} --verbosity 0`: {THREADS} runner threads per process, warnings only",
        "django_jobqueue",
        "enqueue_many() (pipelined, 1 000 scripts per round trip)",
        True,
    ),
    System(
        "rq-fork",
        "rq (fork)",
        ("rq",),
        "`rq worker` (default Worker): one job at a time, a forked child per job",
        "rq",
        "Queue.enqueue_many() (pipelined), 1 000 per call",
        True,
    ),
    System(
        "rq-simple",
        "rq (simple)",
        ("rq",),
        "`rq worker --worker-class rq.worker.SimpleWorker`: one job at a time, in the worker process",
        "rq",
        "Queue.enqueue_many() (pipelined), 1 000 per call",
        True,
    ),
    System(
        "celery-prefork",
        "celery (prefork)",
        ("celery", "kombu"),
        "`celery worker --pool prefork --concurrency P`: P pool child processes, one job at a time each",
        "celery",
        "group(...).apply_async(), 1 000 per group",
        True,
    ),
    System(
        "celery-threads",
        "celery (threads)",
        ("celery", "kombu"),
        f"`celery worker --pool threads --concurrency {THREADS}`: {THREADS} threads per process",
        "celery",
        "group(...).apply_async(), 1 000 per group",
        True,
    ),
    System(
        "dramatiq",
        "dramatiq",
        ("dramatiq",),
        f"`dramatiq --processes P --threads {THREADS}`: {THREADS} threads per process",
        "dramatiq",
        "group(...).run(), 1 000 per group",
        False,
    ),
    System(
        "huey",
        "huey",
        ("huey",),
        f"`huey_consumer --workers {THREADS} --worker-type thread`: {THREADS} threads per process",
        "huey",
        None,
        True,
    ),
]

BY_KEY = {s.key: s for s in SYSTEMS}
