"""The jobs of the chaos run, one per kind of the mixed workload, and the ledger
they write.

The ledger is one append-only file per worker process (``ledger-<tag>.log`` in
CHAOS_LEDGER_DIR), written with one ``os.write`` per record: the kernel holds a
write once it returns, so a record outlives a SIGKILL of its process a moment
later. (A ledger on another Redis needed a round trip: a kill landing during it
made a run that began look as if it never had.) Each execution's first act is
its record: the job id, the attempt (claim) it ran under, a digest of its claim
token (never the token itself: results show up in events and the admin), the
worker process it ran in (its CHAOS_WORKER tag: pids say nothing in a PID
namespace, where every worker is pid 1), when, and the worker id it ran under.

Kinds (see KINDS): ordinary at-least-once jobs; at-most-once jobs; jobs enqueued with
max_attempts=1; jobs enqueued with a TTL; jobs that fail on purpose, whose
on_max_attempts_exhausted hook is slow. All but the ordinary ones also record the end
of their handler, so a run cut off by a kill (no end) is told from one whose
completion was lost (an end, then another run).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from django_jobqueue import job
from django_jobqueue.conf import get_settings

# Records, one a line, by their first word:
#   x <job id> <attempt> <token digest> <worker tag> <pid> <ms> <worker id>   a run began
#   e <job id> <token digest> <ms> ok|fail                                   its handler returned or raised
#   h <job id> start|end <worker tag> <thread name> <ms>                     a slow hook
LEDGER_GLOB = "ledger-*.log"

# Kind -> job name. Options given per enqueue (max_attempts=1, ttl) are in chaos/run.py.
KINDS = {
    "ordinary": "chaos.record",
    "at-most-once": "chaos.at_most_once",
    "max-attempts-1": "chaos.once",
    "ttl": "chaos.ttl",
    "slow-hook": "chaos.fail",
}
KIND_OF_NAME = {name: kind for kind, name in KINDS.items()}
# Attempts of a slow-hook job: each run fails, the last one calls the hook.
FAIL_ATTEMPTS = 2

_fd: int | None = None
_lock = threading.Lock()


def tag() -> str:
    return os.environ.get("CHAOS_WORKER", "?")


def write(record: str) -> None:
    """Append one record to this process's ledger file: one system call, so whole."""
    global _fd
    if _fd is None:
        with _lock:
            if _fd is None:
                path = Path(os.environ["CHAOS_LEDGER_DIR"]) / f"ledger-{tag()}.log"
                _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, (record + "\n").encode())


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def now_ms() -> int:
    return int(time.time() * 1000)


def _run(payload: Any, job: Any) -> str:
    """Record the execution, then work for the payload's work_ms; the token's digest."""
    digest = token_digest(job.claim_token)
    worker = job.claimed.fields.get("worker") or "-"
    write(f"x {job.id} {job.attempts} {digest} {tag()} {os.getpid()} {now_ms()} {worker}")
    if payload.get("work_ms"):
        time.sleep(payload["work_ms"] / 1000)  # widen the window a SIGKILL can land in
    return digest


def _done(payload: Any, job: Any, digest: str) -> dict[str, Any]:
    write(f"e {job.id} {digest} {now_ms()} ok")
    return {"n": payload["n"], "attempt": job.attempts, "token": digest}


@job(name="chaos.record", queue="chaos")
def record(payload, job):
    # The ordinary job records no end: its path stays what the run measured before the mix.
    digest = _run(payload, job)
    return {"n": payload["n"], "attempt": job.attempts, "token": digest}


@job(name="chaos.at_most_once", queue="chaos", delivery="at-most-once")
def at_most_once(payload, job):
    return _done(payload, job, _run(payload, job))


@job(name="chaos.once", queue="chaos")
def once(payload, job):
    return _done(payload, job, _run(payload, job))


@job(name="chaos.ttl", queue="chaos")
def with_ttl(payload, job):
    return _done(payload, job, _run(payload, job))


def slow_hook(job: Any) -> None:
    """Sleeps twice the time after which a silent worker is taken for lost: the worker
    calling it must keep beating (and renewing leases) all the same."""
    thread = threading.current_thread().name
    write(f"h {job.id} start {tag()} {thread} {now_ms()}")
    time.sleep(2 * get_settings().worker_timeout_seconds)
    write(f"h {job.id} end {tag()} {thread} {now_ms()}")


class FailsOnPurpose(RuntimeError):
    pass


@job(name="chaos.fail", queue="chaos", max_attempts=FAIL_ATTEMPTS, on_max_attempts_exhausted=slow_hook)
def fail(payload, job):
    digest = _run(payload, job)
    write(f"e {job.id} {digest} {now_ms()} fail")
    raise FailsOnPurpose(f"chaos job {payload['n']} fails on purpose")
