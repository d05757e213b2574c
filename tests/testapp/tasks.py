"""django.tasks tasks used by tests/test_tasks.py. Like jobs.py, each records what
it did in Redis, so tests see what ran in this process and in worker processes.

Imported only where Django's Tasks framework exists (Django 6+, or the
django-tasks backport on Django 5.2): tests/settings.py sends the "default"
TASKS alias to django_jobqueue.tasks.JobQueueBackend.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from django_jobqueue.connection import get_client
from django_jobqueue.tasks.compat import TASK_DECORATOR_TAKES_OPTIONS, task

RUNS = "test:task-runs"  # list of "<tag>:<pid>", one entry per run


def record(tag: str) -> None:
    get_client().rpush(RUNS, f"{tag}:{os.getpid()}")


def runs(client, tag: str | None = None) -> list[str]:
    entries = client.lrange(RUNS, 0, -1)
    return [e for e in entries if tag is None or e.rsplit(":", 1)[0] == tag]


@task
def noop(*args, **kwargs):
    record("noop")


@task
async def async_noop(*args, **kwargs):
    await asyncio.sleep(0)
    record("async_noop")


@task()
def add(a, b):
    record("add")
    return a + b


@task
async def async_add(a, b):
    await asyncio.sleep(0)
    record("async_add")
    return {"sum": a + b, "async": True, "thread": threading.current_thread().name}


@task
def calculate_meaning_of_life():
    return 42


@task
def failing_value_error():
    raise ValueError("This task failed due to ValueError")


@task
def failing_system_exit():
    raise SystemExit("This task failed due to SystemExit")


@task
def failing_loudly(size):
    # Its exception quotes a whole (huge) input field.
    raise ValueError(f"bad field: {'x' * size}")


@task
def complex_exception():
    raise ValueError(ValueError("This task failed"))


@task
def complex_return_value():
    # Django's rule: a return value must be JSON; a set is not.
    return {"a set": {1, 2}}


@task(takes_context=True)
def get_task_id(context):
    return context.task_result.id


@task(takes_context=True)
def context_report(context, tag):
    """Fails its first attempt, then says what the context showed."""
    record(tag)
    if context.attempt < 2:
        raise RuntimeError(f"attempt {context.attempt} fails on purpose")
    return {"attempt": context.attempt, "worker_ids": list(context.task_result.worker_ids)}


@task
def ordered(tag):
    """For priority tests: the order tasks ran in."""
    record(tag)
    get_client().rpush("test:task-order", tag)


@task
def wait_for_go(tag):
    """Runs until the test sets test:go (or 20 s pass), the first time only."""
    record(tag)
    client = get_client()
    if client.incr(f"test:started:{tag}") == 1:
        deadline = time.monotonic() + 20
        while not client.exists("test:go") and time.monotonic() < deadline:
            time.sleep(0.02)
    return os.getpid()


def not_a_task(*args, **kwargs):
    """A plain function next to the tasks: its name in Redis must not run it."""
    record("not_a_task")


if TASK_DECORATOR_TAKES_OPTIONS:
    # Django 6.1 and django-tasks 0.11+ pass these on to JobQueueTask; on Django
    # 6.0 the same options are given with .using() or OPTIONS["TASK_OPTIONS"].
    @task(max_attempts=1, unique_key="singleton")
    def fails_once_for_good():
        record("fails_once_for_good")
        raise RuntimeError("no retries for me")

else:

    @task
    def fails_once_for_good():
        record("fails_once_for_good")
        raise RuntimeError("no retries for me")


@task
async def async_sleep(seconds):
    record("async_sleep")
    await asyncio.sleep(seconds)
    return "slept"
