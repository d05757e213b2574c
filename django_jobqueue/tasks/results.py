"""From a job hash to a Django TaskResult (and the hash fields tasks add).

A task is an ordinary job; the backend and the worker add a few fields to its
hash so a TaskResult can be rebuilt in any process:

=========================  ================  =========================================
field                      written by        meaning
=========================  ================  =========================================
``task_backend``           enqueue           the TASKS alias it was enqueued through
``task_queue_name``        enqueue           Django's queue_name (not the JOBQUEUE queue)
``task_priority``          enqueue           Django's priority, -100..100
``task_run_after``         enqueue           ISO datetime the task may run from, if deferred
``task_options``           enqueue           JSON of the task's own jobqueue options
``task_started_at_ms``     worker, 1st run   when the first attempt started
``task_worker:<n>``        worker            id of the worker that ran attempt n
``task_error:<n>``         worker            JSON {exception_class_path, traceback} of attempt n
=========================  ================  =========================================

Per-attempt fields (rather than one JSON list) need no read-modify-write: each
claim has its own attempt number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.utils import timezone

from ..engine.ids import is_job_id, job_id_time_ms
from ..exceptions import JobQueueError
from .compat import Task, TaskError, TaskResult, TaskResultStatus

TaskT = TypeVar("TaskT", bound="Task[..., Any]")

F_BACKEND = "task_backend"
F_QUEUE_NAME = "task_queue_name"
F_PRIORITY = "task_priority"
F_RUN_AFTER = "task_run_after"
F_OPTIONS = "task_options"
F_STARTED = "task_started_at_ms"
WORKER_FIELD = "task_worker:"
ERROR_FIELD = "task_error:"

# Our job statuses as Django's. A job waiting out a retry's backoff is READY
# ("ready to be executed again"); an expired job never finished, so FAILED
# ("unable to start").
STATUS = {
    "scheduled": TaskResultStatus.READY,
    "pending": TaskResultStatus.READY,
    "processing": TaskResultStatus.RUNNING,
    "completed": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "expired": TaskResultStatus.FAILED,
    # Ended without finishing its work: django.tasks has no status of its own for these.
    "cancelled": TaskResultStatus.FAILED,
    "lost": TaskResultStatus.FAILED,
}


class TaskAbandoned(JobQueueError):
    """The queue gave up on a task without the task raising: its worker was lost on
    the last attempt, its ttl passed, or its name could not be resolved. Shown as
    the exception class of the last entry in ``TaskResult.errors``."""


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def from_ms(value: Any) -> dt.datetime | None:
    """A ms timestamp as Django would hold it: aware UTC with USE_TZ, else naive local."""
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    aware = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return aware if settings.USE_TZ else timezone.make_naive(aware)


def copy_task(task: TaskT, **changes: Any) -> TaskT:
    """``task`` with fields changed, without running validate_task again.

    A stored result describes what was enqueued; it must load even when the
    settings have changed since (a queue dropped from QUEUES, another backend).
    dataclasses.replace() would validate against today's settings.
    """
    clone = object.__new__(type(task))
    for f in dataclasses.fields(task):
        object.__setattr__(clone, f.name, changes[f.name] if f.name in changes else getattr(task, f.name))
    return clone


def task_from_fields(task: Task[..., Any], fields: Mapping[str, str]) -> Task[..., Any]:
    """The Task as it was enqueued: the decorated one with the stored overrides."""
    names = {f.name for f in dataclasses.fields(task)}
    changes: dict[str, Any] = {}
    if fields.get(F_BACKEND):
        changes["backend"] = fields[F_BACKEND]
    if fields.get(F_QUEUE_NAME):
        changes["queue_name"] = fields[F_QUEUE_NAME]
    try:
        changes["priority"] = int(fields.get(F_PRIORITY, task.priority))
    except ValueError:
        pass
    run_after = fields.get(F_RUN_AFTER)
    changes["run_after"] = dt.datetime.fromisoformat(run_after) if run_after else None
    try:
        options = json.loads(fields.get(F_OPTIONS) or "{}")
    except ValueError:
        options = {}
    if isinstance(options, dict):
        changes.update({k: v for k, v in options.items() if k in names})
    return copy_task(task, **changes)


def _per_attempt(fields: Mapping[str, str], prefix: str) -> list[tuple[int, str]]:
    out = []
    for key, value in fields.items():
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            out.append((int(key[len(prefix) :]), value))
    return sorted(out)


def _errors(fields: Mapping[str, str], status: str, attempts: int) -> list[TaskError]:
    errors = []
    recorded = set()
    for n, raw in _per_attempt(fields, ERROR_FIELD):
        try:
            data = json.loads(raw)
            errors.append(TaskError(exception_class_path=data["exception_class_path"], traceback=data["traceback"]))
            recorded.add(n)
        except (ValueError, KeyError, TypeError):
            continue
    # Failed without the task raising on its last attempt: say why, as an error.
    reason = None
    if status == "expired":
        reason = "the job's ttl passed before the task finished"
    elif status == "cancelled":
        reason = "cancelled: django_jobqueue.cancel() was called for it"
    elif status == "lost":
        reason = fields.get("last_error") or "lost"
    elif status == "failed" and attempts not in recorded:
        reason = fields.get("last_error") or "failed"
    if reason is not None:
        errors.append(TaskError(exception_class_path=class_path(TaskAbandoned), traceback=reason))
    return errors


def _payload(fields: Mapping[str, str]) -> tuple[list[Any], dict[str, Any]]:
    try:
        payload = json.loads(fields.get("payload") or "")
        args, kwargs = payload["args"], payload["kwargs"]
        if isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    except (ValueError, KeyError, TypeError):
        pass
    return [], {}  # unreadable: the job itself records why it failed


def build_result(
    task: Task[..., Any], fields: Mapping[str, str], *, status: TaskResultStatus | None = None
) -> TaskResult[..., Any]:
    """A TaskResult for the job hash ``fields`` of the (decorated) ``task``."""
    job_status = fields.get("status", "")
    try:
        attempts = int(fields.get("attempts") or 0)
    except ValueError:
        attempts = 0
    job_id = fields.get("id", "")
    enqueued_ms = job_id_time_ms(job_id) if is_job_id(job_id) else fields.get("enqueued_at_ms")
    finished_field = {
        "completed": "completed_at_ms",
        "failed": "failed_at_ms",
        "expired": "finished_at_ms",
        "cancelled": "cancelled_at_ms",
        "lost": "failed_at_ms",
    }
    started_ms = fields.get(F_STARTED) or (fields.get("claimed_at_ms") if attempts else None)
    args, kwargs = _payload(fields)
    restored = task_from_fields(task, fields)
    result = TaskResult(
        task=restored,
        id=job_id,
        status=status or STATUS.get(job_status, TaskResultStatus.READY),
        enqueued_at=from_ms(enqueued_ms),
        started_at=from_ms(started_ms),
        finished_at=from_ms(fields.get(finished_field.get(job_status, ""))),
        last_attempted_at=from_ms(fields.get("claimed_at_ms")) if attempts else None,
        args=args,
        kwargs=kwargs,
        backend=restored.backend,
        errors=_errors(fields, job_status, attempts),
        worker_ids=[worker for _n, worker in _per_attempt(fields, WORKER_FIELD)],
    )
    if job_status == "completed":
        try:
            object.__setattr__(result, "_return_value", json.loads(fields.get("result") or "null"))
        except ValueError:
            pass
    return result
