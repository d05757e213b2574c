"""The job the cluster and sentinel tests run: it writes every run to a ledger.

The ledger is a list on a separate, single redis-server (the test suite's own,
given in JOBQUEUE_TEST_LEDGER_URL), which never fails over: what it holds is
exactly what ran, whatever the cluster under test lost.
"""

from __future__ import annotations

import os
import threading
import time

import redis

from django_jobqueue import job

LEDGER = "test:ledger"  # list of "<queue>:<job id>:<attempt>:<pid>", one entry per run started
_local = threading.local()


def ledger_client() -> redis.Redis:
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = redis.Redis.from_url(os.environ["JOBQUEUE_TEST_LEDGER_URL"], decode_responses=True)
    return client


@job(name="ledger")
def ledger(payload, job):
    ledger_client().rpush(LEDGER, f"{job.queue}:{job.id}:{job.attempts}:{os.getpid()}")
    time.sleep(payload.get("sleep", 0))
    return payload.get("n")
