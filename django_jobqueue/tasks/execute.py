"""The worker's side of django.tasks: a task job's name becomes a JobDefinition
whose handler calls the task and keeps Django's bookkeeping.

``registry.get_definition()`` hands names starting with ``django.tasks:`` to
:func:`resolve_job_name`; the worker then runs the definition like any @job, so
tasks get the queue's retries, leases, dead letter and admin. Around the call,
the handler:

* records the attempt's worker id (``worker_ids``, and so ``attempts``) and the
  first start time, only while this worker still holds the claim;
* sends ``task_started``, then ``task_finished`` once the outcome is final
  (success, or the failure that dead-letters it; an attempt that will be
  retried sends no ``task_finished``: its result is READY again);
* makes the handler of a coroutine function async itself, so the worker runs
  it on its event loop with the other async jobs (worker/async_jobs.py): the
  task is awaited (``Task.acall()``), and the bookkeeping's Redis calls and
  signals around it run on a thread, off the loop;
* keeps each failure's exception class path and traceback for ``errors``;
* applies Django's rule that a return value must be JSON (``normalize_json``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import threading
from typing import Any

from django.utils import timezone
from redis.exceptions import WatchError

from .. import django_json
from ..api import get_queue
from ..conf import get_settings
from ..engine.errortext import failure_text, format_traceback
from ..engine.replies import Outcome
from ..exceptions import CorruptJobError
from ..registry import JobDefinition
from ..worker.job import Job
from .compat import (
    InvalidTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from .naming import load_task
from .results import ERROR_FIELD, F_BACKEND, F_STARTED, WORKER_FIELD, build_result, class_path

_definitions: dict[str, JobDefinition] = {}
_lock = threading.Lock()


def resolve_job_name(name: str) -> JobDefinition:
    """registry resolver for ``django.tasks:<module path>``: UnknownJobError (so the
    worker dead-letters the job) unless the name is a decorated Task."""
    definition = _definitions.get(name)
    if definition is None:
        task = load_task(name)
        handler = run_async_task if inspect.iscoroutinefunction(task.func) else run_task
        with _lock:
            definition = _definitions.setdefault(name, JobDefinition(name=name, func=functools.partial(handler, task)))
    return definition


def _sender(alias: str) -> type:
    """Signals go out from the backend class, as Django's backends send them."""
    from .backend import JobQueueBackend

    try:
        backend = task_backends[alias]
    except (InvalidTaskBackend, KeyError):
        return JobQueueBackend
    return type(backend) if isinstance(backend, JobQueueBackend) else JobQueueBackend


def _args(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(payload, dict) and isinstance(payload.get("args"), list) and isinstance(payload.get("kwargs"), dict):
        return payload["args"], payload["kwargs"]
    raise CorruptJobError('a task\'s payload must be {"args": [...], "kwargs": {...}}')


def _write_if_ours(job: Job, mapping: dict[str, str], *, setnx: tuple[str, str] | None = None) -> bool:
    """Write hash fields only while ``job``'s claim is still ours: a worker that
    lost its claim (or whose job was deleted under it) must not write, nor
    recreate a deleted hash. WATCH is enough here: the hash is one key."""
    queue = get_queue(job.queue)
    key = queue.keys.job(job.id)
    with queue.client.pipeline(transaction=True) as pipe:
        for _ in range(5):  # the lease renewer may touch the hash meanwhile
            try:
                pipe.watch(key)
                token = pipe.hget(key, "claim_token")
                if isinstance(token, bytes):
                    token = token.decode()
                if token != job.claim_token:
                    return False
                pipe.multi()
                pipe.hset(key, mapping=mapping)
                if setnx is not None:
                    pipe.hsetnx(key, *setnx)
                pipe.execute()
                return True
            except WatchError:
                continue
    return False


def _failure(exc: BaseException) -> TaskError:
    # Capped as the job's own last_traceback is (errortext.py): one attempt's
    # field holds at most MAX_TRACEBACK_CHARS, whatever the exception says.
    return TaskError(exception_class_path=class_path(type(exc)), traceback=format_traceback(exc))


def _finish(result: TaskResult[..., Any], status: TaskResultStatus, **changes: Any) -> TaskResult[..., Any]:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    for name, value in changes.items():
        object.__setattr__(result, name, value)
    return result


def run_task(task: Task[..., Any], payload: Any, job: Job) -> Any:
    """The handler of a task job: call the task the Django way, finish the job."""
    run = _begin(task, payload, job)
    try:
        task_started.send(run.sender, task_result=run.result)
        value = _returned(run, run.task.call(*run.call_args, **run.kwargs))
    except BaseException as exc:  # noqa: BLE001 - the worker fails the job for SystemExit too
        _failed(run, job, exc)
        return None
    _succeeded(run, job, value)
    return value


async def run_async_task(task: Task[..., Any], payload: Any, job: Job) -> Any:
    """The handler of a task job whose function is a coroutine function, run
    on the worker's event loop: the task awaited, the rest on a thread."""
    run = await asyncio.to_thread(_begin, task, payload, job)
    try:
        await asyncio.to_thread(task_started.send, run.sender, task_result=run.result)
        value = _returned(run, await run.task.acall(*run.call_args, **run.kwargs))
    except BaseException as exc:  # noqa: BLE001 - the worker fails the job for SystemExit too
        current = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
            raise  # the worker's shutdown cut it off: it hands the job back, no attempt failed
        await asyncio.to_thread(_failed_on_thread, run, job, exc)
        return None
    await asyncio.to_thread(_succeeded, run, job, value)
    return value


@dataclasses.dataclass(frozen=True)
class _Run:
    """One attempt of a task: its result so far, the signals' sender, its arguments."""

    task: Task[..., Any]
    result: TaskResult[..., Any]
    sender: type
    call_args: list[Any]
    kwargs: dict[str, Any]


def _begin(task: Task[..., Any], payload: Any, job: Job) -> _Run:
    """Record the attempt (while the claim is ours)."""
    args, kwargs = _args(payload)
    fields = job.fields
    worker_field = f"{WORKER_FIELD}{job.attempts}"
    worker_id = fields.get("worker") or "unknown"
    started_ms = fields.get("claimed_at_ms")
    _write_if_ours(job, {worker_field: worker_id}, setnx=(F_STARTED, started_ms) if started_ms else None)
    fields = {**fields, worker_field: worker_id}
    if started_ms:
        fields.setdefault(F_STARTED, started_ms)
    result = build_result(task, fields, status=TaskResultStatus.RUNNING)
    sender = _sender(fields.get(F_BACKEND) or task.backend)
    call_args = [TaskContext(task_result=result), *args] if result.task.takes_context else args
    return _Run(result.task, result, sender, call_args, kwargs)


def _returned(run: _Run, value: Any) -> Any:
    value = normalize_json(value)
    # Checked before completing, so a result that cannot be stored fails the
    # attempt like an exception would, with Django's error recorded.
    django_json.dumps(value, what="result", max_bytes=get_settings().max_payload_bytes)
    return value


def _failed(run: _Run, job: Job, exc: BaseException) -> None:
    """Called in the except block of the failure (receivers see sys.exc_info())."""
    error = _failure(exc)
    data = {"exception_class_path": error.exception_class_path, "traceback": error.traceback}
    _write_if_ours(job, {f"{ERROR_FIELD}{job.attempts}": json.dumps(data)})
    job.failed(failure_text(exc), traceback=error.traceback)
    if getattr(job, "fail_result", None) is Outcome.FAILED:
        # Sent inside the except block, as Django does, so receivers (and
        # Django's own logging) see the exception in sys.exc_info().
        task_finished.send(
            run.sender, task_result=_finish(run.result, TaskResultStatus.FAILED, errors=[*run.result.errors, error])
        )


def _failed_on_thread(run: _Run, job: Job, exc: BaseException) -> None:
    """_failed() on another thread than the one that caught ``exc``: raised
    again there, so that its receivers see it in sys.exc_info() too."""
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - re-raised only to be the exception being handled
        _failed(run, job, exc)


def _succeeded(run: _Run, job: Job, value: Any) -> None:
    if job.completed(value):
        task_finished.send(
            run.sender, task_result=_finish(run.result, TaskResultStatus.SUCCESSFUL, _return_value=value)
        )
