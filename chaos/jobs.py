"""The one job of the chaos run. Each execution records itself in the ledger, a
second Redis that is never killed, so executions are counted whatever happens to
the queue's Redis: the job id, the attempt (claim) it ran under and a digest of
its claim token (never the token itself: results show up in events and the admin)."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import redis

from django_jobqueue import job

RUNS = "chaos:runs"  # hash job id -> executions
EXECUTIONS = "chaos:exec"  # list of "<job id> <attempt> <token digest> <pid> <ms>"

_ledger: redis.Redis | None = None
_lock = threading.Lock()


def ledger() -> redis.Redis:
    global _ledger
    with _lock:
        if _ledger is None:
            _ledger = redis.Redis.from_url(os.environ["CHAOS_LEDGER_URL"], decode_responses=True)
        return _ledger


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@job(name="chaos.record", queue="chaos")
def record(payload, job):
    digest = token_digest(job.claim_token)
    pipe = ledger().pipeline(transaction=True)
    pipe.hincrby(RUNS, job.id, 1)
    pipe.rpush(EXECUTIONS, f"{job.id} {job.attempts} {digest} {os.getpid()} {int(time.time() * 1000)}")
    pipe.execute()
    if payload.get("work_ms"):
        time.sleep(payload["work_ms"] / 1000)  # widen the window a SIGKILL can land in
    return {"n": payload["n"], "attempt": job.attempts, "token": digest}
