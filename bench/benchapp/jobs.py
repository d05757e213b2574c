"""The benchmark's jobs, found by django_jobqueue's autodiscovery like any app's."""

import asyncio

from bench.common import ASYNC_SLEEP_S, bump, mark_first_start, mark_start
from django_jobqueue import job

# Whether this process's first async handler has recorded its start yet.
_async_started = False


@job(name="bench.noop")
def noop(payload, job):
    bump()


@job(name="bench.latency")
def latency(payload, job):
    mark_start()


@job(name="bench.async_sleep")
async def async_sleep(payload, job):
    # Our async drain (ours only): a handler that only waits. The first one
    # notes the drain's start (one synchronous call, once per process); the
    # harness counts the completions in the queue's stats, so nothing else
    # here touches Redis or the loop.
    global _async_started
    if not _async_started:
        _async_started = True
        mark_first_start()
    await asyncio.sleep(ASYNC_SLEEP_S)
