"""JobQueueBackend: Django's Tasks framework on django-jobqueue's Redis queues.

``TASKS = {"default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend", ...}}``
turns ``@task`` functions into jobs that ``manage.py jobq_worker`` runs beside
``@job`` handlers, with the queue's retries, leases, dead letter and admin.
Options and the priority mapping are described in docs/tasks.md.

Django builds backends when a module with ``@task`` is imported, so nothing
here touches Redis before the first enqueue() or get_result().
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

from django.apps import apps
from django.core import checks
from django.utils import timezone
from redis.exceptions import RedisError

from .. import connection, django_json, tracing
from ..api import get_queue
from ..async_connection import get_async_client
from ..conf import get_settings
from ..engine.async_queue import AsyncEnqueuer
from ..engine.ids import is_job_id, job_id_time_ms, new_job_id
from ..engine.queue import RedisJobQueue
from ..exceptions import InvalidJobOptions, QueueUnavailable, UnknownJobError, UnknownQueueError
from ..options import EnqueueOptions, validate
from ..registry import MAX_JOB_NAME_LENGTH, TASK_NAME_PREFIX
from .compat import (
    DEFAULT_TASK_PRIORITY,
    DEFAULT_TASK_QUEUE_NAME,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from .naming import job_name, load_task
from .results import (
    F_BACKEND,
    F_OPTIONS,
    F_PRIORITY,
    F_QUEUE_NAME,
    F_RUN_AFTER,
    build_result,
    copy_task,
    from_ms,
)

# The jobqueue options a task may carry (on @task(...) where Django allows it,
# on .using(...), or in OPTIONS): enqueue()'s options that make sense per task.
JOB_OPTION_NAMES = ("max_attempts", "ttl", "unique_key", "keep_result")
OPTION_KEYS = frozenset({"QUEUE_MAP", "MAX_ATTEMPTS", "TTL", "KEEP_RESULT", "TASK_OPTIONS"})


if TYPE_CHECKING:
    # django-stubs' Task is generic only for type checkers.
    _TaskBase = Task[..., Any]
else:
    _TaskBase = Task

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobQueueTask(_TaskBase):
    """A Task with django-jobqueue's per-task options (None: the backend's OPTIONS,
    then the JOBQUEUE queue's settings)."""

    max_attempts: int | None = None
    ttl: float | dt.timedelta | None = None
    unique_key: str | None = None
    keep_result: bool | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: dt.datetime | dt.timedelta | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> JobQueueTask:
        """Task.using(), plus our options: ``.using(unique_key="invoice:42")``."""
        unknown = sorted(set(options) - set(JOB_OPTION_NAMES))
        if unknown:
            raise TypeError(f"using() got unexpected option(s): {', '.join(unknown)}")
        # Explicit base call: zero-argument super() does not work in a slots dataclass.
        changed = Task.using(self, priority=priority, queue_name=queue_name, backend=backend)
        options = {k: v for k, v in options.items() if v is not None}
        if run_after is not None:  # set here: Task.using() is typed for a datetime only
            options["run_after"] = run_after
        if options:
            changed = dataclasses.replace(changed, **options)
        assert isinstance(changed, JobQueueTask)  # using() and replace() keep the class
        return changed


def _aware(value: dt.datetime) -> dt.datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value)


def delay_ms(run_after: dt.datetime | dt.timedelta | None) -> int:
    """How long from now until ``run_after``, in whole ms (0: due already)."""
    if run_after is None:
        return 0
    if isinstance(run_after, dt.timedelta):
        seconds = run_after.total_seconds()
    else:
        seconds = (_aware(run_after) - dt.datetime.now(tz=dt.UTC)).total_seconds()
    return max(0, math.ceil(seconds * 1000))


def _parse_bands(alias: str, django_queue: str, value: Any) -> list[tuple[int, str]]:
    where = f"TASKS[{alias!r}]['OPTIONS']['QUEUE_MAP'][{django_queue!r}]"
    if isinstance(value, str) and value:
        return [(TASK_MIN_PRIORITY, value)]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidTaskBackend(f"{where} must be a JOBQUEUE queue name or a list of (min_priority, queue) pairs")
    bands = []
    for band in value:
        ok = (
            isinstance(band, (list, tuple))
            and len(band) == 2
            and isinstance(band[0], int)
            and not isinstance(band[0], bool)
            and TASK_MIN_PRIORITY <= band[0] <= TASK_MAX_PRIORITY
            and isinstance(band[1], str)
            and band[1]
        )
        if not ok:
            raise InvalidTaskBackend(
                f"{where}: {band!r} is not a (min_priority, queue) pair with min_priority from "
                f"{TASK_MIN_PRIORITY} to {TASK_MAX_PRIORITY}"
            )
        bands.append((band[0], band[1]))
    bands.sort(reverse=True)
    if len({m for m, _q in bands}) != len(bands):
        raise InvalidTaskBackend(f"{where}: two bands have the same min_priority")
    return bands


def _check_options(where: str, options: Any) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise InvalidTaskBackend(f"{where} must be a dict, got {options!r}")
    unknown = sorted(set(options) - set(JOB_OPTION_NAMES))
    if unknown:
        raise InvalidTaskBackend(
            f"{where} has unknown option(s) {', '.join(unknown)}; known: {', '.join(JOB_OPTION_NAMES)}"
        )
    try:
        validate(options, where=where)
    except InvalidJobOptions as exc:
        raise InvalidTaskBackend(f"{where}: {exc}") from None
    return {k: v for k, v in options.items() if v is not None}


class JobQueueBackend(BaseTaskBackend):
    """Runs Django tasks as django-jobqueue jobs; see docs/tasks.md."""

    task_class = JobQueueTask

    supports_defer = True  # run_after: aware datetimes, and timedeltas from enqueue
    supports_async_task = True  # coroutine functions, run by the worker through Task.call()
    supports_get_result = True  # results live in Redis, readable from any process
    # Priority is honoured by routing priority bands to JOBQUEUE queues that a
    # worker serves highest first (OPTIONS["QUEUE_MAP"]). An instance without
    # any banded queue says False, and refuses a priority other than 0.
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Only parsing here: Django builds backends at import time, and a backend
        # must not need Redis (or even valid JOBQUEUE settings) to exist.
        options = dict(self.options or {})
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(OPTION_KEYS))}"
            )
        queue_map = options.get("QUEUE_MAP") or {}
        if not isinstance(queue_map, Mapping):
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS']['QUEUE_MAP'] must be a dict")
        self.routes = {name: _parse_bands(alias, name, value) for name, value in queue_map.items()}
        self.supports_priority = any(len(bands) > 1 for bands in self.routes.values())
        defaults = {k.lower(): options[k] for k in ("MAX_ATTEMPTS", "TTL", "KEEP_RESULT") if k in options}
        self.default_options = _check_options(f"TASKS[{alias!r}]['OPTIONS']", defaults)
        per_task = options.get("TASK_OPTIONS") or {}
        if not isinstance(per_task, Mapping):
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS']['TASK_OPTIONS'] must be a dict of module paths")
        self.task_options = {
            path: _check_options(f"TASKS[{alias!r}]['OPTIONS']['TASK_OPTIONS'][{path!r}]", value)
            for path, value in per_task.items()
        }

    # ---------------------------------------------------------------- routing

    def bands(self, queue_name: str) -> list[tuple[int, str | None]]:
        """(min_priority, JOBQUEUE queue) bands of a Django queue, highest first;
        None stands for JOBQUEUE's DEFAULT_QUEUE."""
        if queue_name in self.routes:
            return list(self.routes[queue_name])
        return [(TASK_MIN_PRIORITY, None if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name)]

    def jobqueue_queue(self, task: Task[..., Any]) -> str:
        """The JOBQUEUE queue a task goes to: the first band its priority reaches
        (the lowest band takes whatever is left)."""
        bands = self.bands(task.queue_name)
        chosen = next((q for minimum, q in bands if task.priority >= minimum), bands[-1][1])
        return chosen or get_settings().default_queue

    def _queue(self, task: Task[..., Any]) -> RedisJobQueue:
        try:
            return get_queue(self.jobqueue_queue(task))
        except UnknownQueueError as exc:
            raise InvalidTask(f"Task {task.module_path} cannot be enqueued: {exc}") from None

    # ------------------------------------------------------------- validation

    def job_options(self, task: Task[..., Any], delay: float = 0) -> EnqueueOptions:
        """Our enqueue options for ``task``: OPTIONS, then TASK_OPTIONS, then the task's own."""
        own = {k: getattr(task, k, None) for k in JOB_OPTION_NAMES}
        merged = {
            **self.default_options,
            **self.task_options.get(task.module_path, {}),
            **{k: v for k, v in own.items() if v is not None},
        }
        try:
            return validate({**merged, "delay": delay}, where=f"task {task.module_path}")
        except InvalidJobOptions as exc:
            raise InvalidTask(str(exc)) from None

    def validate_task(self, task: Task[..., Any]) -> None:
        # Whatever the task holds (the field is typed a datetime; using() here takes a timedelta too).
        run_after: object = task.run_after
        if isinstance(run_after, dt.timedelta):
            # Django's own check calls timezone.is_aware(run_after), which raises
            # AttributeError for a timedelta when USE_TZ is on (Django 6.0 to 6.1.3,
            # and the backport): check everything else with run_after left out.
            super().validate_task(copy_task(task, run_after=None))
            if run_after < dt.timedelta(0):
                raise InvalidTask("run_after must not be a negative timedelta.")
        elif run_after is not None and not isinstance(run_after, dt.datetime):
            raise InvalidTask("run_after must be a datetime or a timedelta.")
        else:
            super().validate_task(task)
        if len(job_name(task)) > MAX_JOB_NAME_LENGTH:
            raise InvalidTask(
                f"Task module path is longer than {MAX_JOB_NAME_LENGTH - len(TASK_NAME_PREFIX)} characters."
            )
        if task.priority != DEFAULT_TASK_PRIORITY and len(self.bands(task.queue_name)) < 2:
            raise InvalidTask(
                f"Queue '{task.queue_name}' has no priority bands in OPTIONS['QUEUE_MAP'], so priority "
                f"{task.priority} could not be honoured."
            )
        self.job_options(task)

    # ---------------------------------------------------------------- enqueue

    def enqueue(self, task: Task[_P, _R], args: Iterable[Any], kwargs: Mapping[str, Any]) -> TaskResult[_P, _R]:
        call = self._prepare(task, args, kwargs)
        try:
            with tracing.publishing(
                tracing.caller_context(), call.name, call.queue.queue_name, call.extra, job_id=call.result.id
            ) as fields:
                stored_id = call.queue.enqueue_encoded(call.payload, extra=fields, **call.options)
        except RedisError as exc:
            raise QueueUnavailable(f"could not enqueue task {task.module_path}: {exc}") from exc
        if stored_id != call.result.id:
            # unique_key is held by an unfinished run of the task: that run stands
            # for this enqueue, and nothing new was enqueued (so no signal). Its
            # result is the caller's: get_result() is typed for any task, hence the cast.
            return cast("TaskResult[_P, _R]", self.get_result(stored_id))
        task_enqueued.send(type(self), task_result=call.result)
        return call.result

    async def aenqueue(self, task: Task[_P, _R], args: Iterable[Any], kwargs: Mapping[str, Any]) -> TaskResult[_P, _R]:
        """enqueue(), awaited on the event loop's redis.asyncio client (no thread hop)."""
        call = self._prepare(task, args, kwargs)
        enqueuer = AsyncEnqueuer(call.queue, await get_async_client())
        try:
            with tracing.publishing(
                tracing.caller_context(), call.name, call.queue.queue_name, call.extra, job_id=call.result.id
            ) as fields:
                stored_id = await enqueuer.enqueue_encoded(call.payload, extra=fields, **call.options)
        except RedisError as exc:
            raise QueueUnavailable(f"could not enqueue task {task.module_path}: {exc}") from exc
        if stored_id != call.result.id:
            return cast("TaskResult[_P, _R]", await self.aget_result(stored_id))
        await task_enqueued.asend(type(self), task_result=call.result)
        return call.result

    def _prepare(self, task: Task[_P, _R], args: Iterable[Any], kwargs: Mapping[str, Any]) -> _Enqueue[_P, _R]:
        """What an enqueue of ``task`` writes, every check made: nothing is written yet."""
        self.validate_task(task)
        run_after: dt.datetime | dt.timedelta | None = task.run_after  # a timedelta too: see validate_task
        wait_ms = delay_ms(run_after)
        if isinstance(run_after, dt.timedelta):
            # Stored and shown as the moment it was due from, like a datetime run_after.
            task = copy_task(task, run_after=timezone.now() + run_after)
        opts = self.job_options(task, wait_ms / 1000)
        queue = self._queue(task)
        job_id = new_job_id()
        result = TaskResult(
            task=task,
            id=job_id,
            status=TaskResultStatus.READY,
            enqueued_at=from_ms(job_id_time_ms(job_id)),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),  # TaskResult normalises these, refusing what is not JSON
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        payload = queue.encode({"args": result.args, "kwargs": result.kwargs})
        extra = {
            F_BACKEND: self.alias,
            F_QUEUE_NAME: task.queue_name,
            F_PRIORITY: str(task.priority),
            F_OPTIONS: django_json.dumps(_own_options(task)),
        }
        if task.run_after is not None:
            extra[F_RUN_AFTER] = task.run_after.isoformat()
        if not opts.keep_result:
            extra["keep_result"] = "0"
        name = job_name(task)
        options = {
            "job_id": job_id,
            "name": name,
            "delay_ms": opts.delay_ms,
            "ttl_ms": opts.ttl_ms,
            "unique_key": opts.unique_key,
            "max_attempts": opts.max_attempts,
        }
        return _Enqueue(result, queue, payload, extra, name, options)

    # ---------------------------------------------------------------- results

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        if not is_job_id(result_id):
            raise TaskResultDoesNotExist(result_id)
        return self._result(result_id, self._found(result_id, self._read(connection.get_client(), result_id)))

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        """get_result(), awaited on the event loop's redis.asyncio client."""
        if not is_job_id(result_id):
            raise TaskResultDoesNotExist(result_id)
        pipe = self._read(await get_async_client(), result_id)
        try:
            found = await pipe.execute()
        except RedisError as exc:
            raise QueueUnavailable(f"could not read task result {result_id}: {exc}") from exc
        return self._result(result_id, _first(found))

    @staticmethod
    def _read(client: Any, result_id: str) -> Any:
        """A pipeline reading the job hash of ``result_id`` in every JOBQUEUE queue."""
        pipe = client.pipeline(transaction=False)
        for name in get_settings().queues:
            pipe.hgetall(get_queue(name).keys.job(result_id))
        return pipe

    @staticmethod
    def _found(result_id: str, pipe: Any) -> dict[str, str] | None:
        try:
            return _first(pipe.execute())
        except RedisError as exc:
            raise QueueUnavailable(f"could not read task result {result_id}: {exc}") from exc

    @staticmethod
    def _result(result_id: str, fields: dict[str, str] | None) -> TaskResult[..., Any]:
        if fields is None or not fields.get("name", "").startswith(TASK_NAME_PREFIX):
            raise TaskResultDoesNotExist(result_id)
        try:
            task = load_task(fields["name"])
        except UnknownJobError as exc:
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from exc
        return build_result(task, fields)

    # ----------------------------------------------------------------- checks

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """django_jobqueue.E011: the django_jobqueue app is not installed;
        django_jobqueue.E010: a queue this backend routes to is not in JOBQUEUE['QUEUES']."""
        errors = list(super().check(**kwargs))
        if not apps.is_installed("django_jobqueue"):
            # Enqueueing still works without the app, but its jobq_worker
            # command (and its own checks, the admin) do not exist: the tasks
            # would wait in Redis with nothing to run them.
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] uses {type(self).__name__}, but 'django_jobqueue' is not in "
                    "INSTALLED_APPS: no jobq_worker command exists to run the tasks it enqueues",
                    hint="Add 'django_jobqueue' to INSTALLED_APPS.",
                    id="django_jobqueue.E011",
                )
            )
        try:
            known = set(get_settings().queues)
        except Exception:  # noqa: BLE001 - a bad JOBQUEUE is reported by django_jobqueue.E001
            return errors
        names = set(self.queues) | set(self.routes)
        for django_queue in sorted(names):
            for _minimum, queue in self.bands(django_queue):
                if queue is not None and queue not in known:
                    errors.append(
                        checks.Error(
                            f"TASKS[{self.alias!r}] sends queue_name {django_queue!r} to JOBQUEUE queue {queue!r}, "
                            "which is not in JOBQUEUE['QUEUES']",
                            hint="Add the queue to JOBQUEUE['QUEUES'], or map it in OPTIONS['QUEUE_MAP'].",
                            id="django_jobqueue.E010",
                        )
                    )
        return errors


def _first(found: list[Any]) -> dict[str, str] | None:
    """The job hash of a result id, from reading it in every queue (one reply each)."""
    for raw in found:
        if raw:
            return {_text(k): _text(v) for k, v in raw.items()}
    return None


@dataclasses.dataclass(frozen=True)
class _Enqueue(Generic[_P, _R]):
    """An enqueue of a task, checked and ready to write (sync or awaited)."""

    result: TaskResult[_P, _R]
    queue: RedisJobQueue
    payload: str
    extra: dict[str, str]
    name: str
    options: dict[str, Any]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _own_options(task: Task[..., Any]) -> dict[str, Any]:
    """The jobqueue options set on the task itself, as stored in ``task_options``
    (a timedelta ttl as seconds, so the hash holds plain JSON)."""
    own = {k: getattr(task, k, None) for k in JOB_OPTION_NAMES}
    if isinstance(own["ttl"], dt.timedelta):
        own["ttl"] = own["ttl"].total_seconds()
    return {k: v for k, v in own.items() if v is not None}
