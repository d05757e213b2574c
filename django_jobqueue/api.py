"""enqueue(), enqueue_many() and get_queue(): the Django-facing front of the engine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from redis.exceptions import RedisError

from . import connection, tracing
from .conf import SETTINGS_READ, QueueSettings, get_settings
from .engine.ids import new_job_id
from .exceptions import EnqueueVetoed, InvalidJobOptions, QueueUnavailable
from .options import EnqueueOptions, validate
from .queue import RedisJobQueue
from .registry import JobDefinition, get_definition

_queues: dict[str, RedisJobQueue] = {}
# job name -> (its definition, and when enqueue() is given no options: its
# options, its queue, its replication settings)
_prepared: dict[str, tuple[JobDefinition, EnqueueOptions, RedisJobQueue, dict[str, int]]] = {}
_queues_lock = threading.Lock()
logger = logging.getLogger("django_jobqueue")


def get_queue(name: str | None = None) -> RedisJobQueue:
    """The engine for a configured queue (default: DEFAULT_QUEUE), on the shared client."""
    settings = get_settings()
    qs = settings.queue(name)
    queue = _queues.get(qs.name)
    if queue is None:
        with _queues_lock:
            queue = _queues.get(qs.name)
            if queue is None:
                queue = _queues[qs.name] = make_queue(qs, connection.get_client())
    return queue


def make_queue(qs: QueueSettings, client: Any) -> RedisJobQueue:
    settings = get_settings()
    queue = RedisJobQueue(
        client,
        qs.name,
        visibility_ms=qs.visibility_ms,
        max_attempts=qs.max_attempts,
        key_prefix=settings.key_prefix,
        history=-1 if qs.history is None else qs.history,  # -1: no count bound (complete.lua)
        completed_ttl_s=qs.completed_after_seconds,
        failed_ttl_s=qs.failed_after_seconds,
        max_payload_bytes=settings.max_payload_bytes,
        backoff_base_seconds=qs.backoff_base_seconds,
        backoff_max_seconds=qs.backoff_max_seconds,
        cluster=settings.cluster,
        limits=qs.limits,
    )
    queue.expired_ttl = qs.expired_after_seconds or 0
    queue.failed_history = qs.failed_history
    return queue


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS_READ:
        reset_queues()


def reset_queues() -> None:
    with _queues_lock:
        _queues.clear()
        _prepared.clear()


def resolve(name_or_function: str | Callable[..., Any] | JobDefinition) -> JobDefinition:
    """The definition for a job name, an @job function or a definition."""
    if isinstance(name_or_function, JobDefinition):
        return name_or_function
    if isinstance(name_or_function, str):
        return get_definition(name_or_function)
    definition = getattr(name_or_function, "definition", None)
    if isinstance(definition, JobDefinition):
        return definition
    raise InvalidJobOptions(f"{name_or_function!r} is not a job: decorate it with @job or pass a job name")


def _prepare(
    definition: JobDefinition, options: dict[str, Any]
) -> tuple[EnqueueOptions, RedisJobQueue, dict[str, int]]:
    """(the options, the queue, the replication settings) of an enqueue call."""
    if not options:
        # The common call, enqueue(name, payload): all three depend only on
        # the definition and the settings, so they are worked out once.
        prepared = _prepared.get(definition.name)
        if prepared is not None and prepared[0] is definition:
            return prepared[1], prepared[2], prepared[3]
    opts = validate({**definition.defaults, **options})
    queue = get_queue(opts.queue or definition.queue)
    replication = _replication(opts, queue)
    if not options:
        _prepared[definition.name] = (definition, opts, queue, replication)
    return opts, queue, replication


def _replication(opts: EnqueueOptions, queue: RedisJobQueue) -> dict[str, int]:
    qs = get_settings().queue(queue.queue_name)
    replicas = qs.replicas if opts.replicas is None else opts.replicas
    timeout = qs.replication_timeout_ms if opts.replication_timeout_ms is None else opts.replication_timeout_ms
    return {"replicas": replicas, "replication_timeout_ms": timeout}


def _check_preflight(definition: JobDefinition, payload: Any, queue: RedisJobQueue) -> None:
    hook = definition.preflight.on_before_add
    if hook is not None and not hook({"name": definition.name, "payload": payload}, queue.queue_name):
        raise EnqueueVetoed(f"preflight on_before_add of job {definition.name!r} refused the job")


def enqueue(name_or_function: str | Callable[..., Any] | JobDefinition, payload: Any = None, **options: Any) -> str:
    """Add a job; returns its ID.

    Options: queue, delay (seconds or timedelta), run_at (aware datetime),
    max_attempts, ttl (seconds), unique_key, on_commit, keep_result.
    Raises UnknownJobError, InvalidJobOptions, PayloadError, EnqueueVetoed or
    QueueUnavailable; in each case nothing was written.

    With ``unique_key``, the id of the unfinished job holding the key is
    returned instead, and nothing is added. With ``on_commit`` too, the key is
    looked up now: held, its holder's id is returned and nothing is deferred;
    free, the new job's id is returned and the job is added at commit, unless
    another job took the key meanwhile (then that job stands for this one, the
    returned id never exists, and a warning is logged).
    """
    definition = resolve(name_or_function)
    opts, queue, replication = _prepare(definition, options)
    payload_json = queue.encode(payload)
    _check_preflight(definition, payload, queue)
    fields = _fields(opts, payload)
    job_id = new_job_id()
    caller = tracing.caller_context()

    def add(extra: Mapping[str, str] | None) -> str:
        return queue.enqueue_encoded(payload_json, extra=extra, **_write_options(definition, opts, job_id, replication))

    def write() -> str:
        try:
            if caller is None:
                # No span to continue: no with block either (a third of a
                # microsecond of the call's Python time).
                return add(fields)
            with tracing.publishing(caller, definition.name, queue.queue_name, fields, job_id=job_id) as extra:
                return add(extra)
        except RedisError as exc:
            raise QueueUnavailable(f"could not enqueue job {definition.name!r}: {exc}") from exc

    if opts.on_commit:
        return _enqueue_on_commit(queue, definition.name, job_id, opts.unique_key, write)
    return write()


def _write_options(
    definition: JobDefinition, opts: EnqueueOptions, job_id: str, replication: dict[str, int]
) -> dict[str, Any]:
    """The engine's enqueue options (but ``extra``) of an enqueue() or aenqueue()."""
    return {
        "job_id": job_id,
        "name": definition.name,
        "delay_ms": opts.delay_ms,
        "ttl_ms": opts.ttl_ms,
        "unique_key": opts.unique_key,
        "max_attempts": opts.max_attempts or definition.max_attempts,
        **replication,
    }


def _bulk_options(definition: JobDefinition, opts: EnqueueOptions, replication: dict[str, int]) -> dict[str, Any]:
    """The engine's enqueue_many options (but ``extra``) of an enqueue_many() or aenqueue_many()."""
    return {
        "name": definition.name,
        "delay_ms": opts.delay_ms,
        "ttl_ms": opts.ttl_ms,
        "max_attempts": opts.max_attempts or definition.max_attempts,
        **replication,
    }


def _fields(opts: EnqueueOptions, payload: Any) -> dict[str, str] | None:
    """The job hash fields an enqueue adds: its options', its concurrency key's."""
    if opts.concurrency_key is None:
        return opts.hash_fields()
    return {**(opts.hash_fields() or {}), **opts.key_fields(payload)}


def _runs(
    opts: EnqueueOptions, queue: RedisJobQueue, payloads: list[Any]
) -> list[tuple[dict[str, str] | None, list[Any]]]:
    """enqueue_many()'s batches: jobs with a concurrency key carry its value,
    so one batch per run of payloads with the same fields, in order (the jobs
    keep their order). With several, every payload is encoded first: a bad
    one must fail before the first batch is written."""
    runs: list[tuple[dict[str, str] | None, list[Any]]] = []
    for payload in payloads:
        fields = _fields(opts, payload)
        if runs and runs[-1][0] == fields:
            runs[-1][1].append(payload)
        else:
            runs.append((fields, [payload]))
    if len(runs) > 1:
        for payload in payloads:
            queue.encode(payload)
    return runs


def _enqueue_on_commit(queue: RedisJobQueue, name: str, job_id: str, unique_key: str, write: Callable[[], str]) -> str:
    """enqueue(on_commit=True): the ID is chosen now so the caller can keep it;
    the write happens only if (and when) the surrounding transaction commits."""
    db = transaction.get_connection()
    if not db.in_atomic_block and db.get_autocommit():
        # No transaction: on_commit would write at once, so write, and return
        # what the write says (the holder of a unique key, if one holds it).
        return write()
    if unique_key:
        # A key held now would make the write at commit add nothing, and the
        # id chosen here would never exist: return the holder, as enqueue()
        # without on_commit does, and defer nothing.
        try:
            holder = queue.unique_holder(unique_key)
        except RedisError as exc:
            raise QueueUnavailable(f"could not enqueue job {name!r}: {exc}") from exc
        if holder is not None:
            return holder

    def write_at_commit() -> None:
        added = write()
        if added != job_id:
            # The key was taken between the call and the commit: the caller
            # holds an id that will never exist. Said loudly, since nothing
            # else can tell it.
            logger.warning(
                "job %s (%s) was not enqueued at commit: unique key %r is held by unfinished job %s, "
                "which stands for it",
                job_id,
                name,
                unique_key,
                added,
            )

    transaction.on_commit(write_at_commit)
    return job_id


def enqueue_many(
    name_or_function: str | Callable[..., Any] | JobDefinition, payloads: Iterable[Any], **options: Any
) -> list[str]:
    """Add many jobs of one kind, pipelined; same options as enqueue() except
    unique_key. Every payload is checked before anything is written."""
    definition = resolve(name_or_function)
    if options.get("unique_key"):
        raise InvalidJobOptions("unique_key is given per job: use enqueue() for unique jobs")
    opts, queue, replication = _prepare(definition, options)
    payloads = list(payloads)
    for payload in payloads:
        _check_preflight(definition, payload, queue)
    runs = _runs(opts, queue, payloads)
    caller = tracing.caller_context()  # one trace context for all the jobs

    def write() -> list[str]:
        ids: list[str] = []
        try:
            for fields, batch in runs:
                with tracing.publishing(caller, definition.name, queue.queue_name, fields, count=len(batch)) as extra:
                    ids += queue.enqueue_many(batch, extra=extra, **_bulk_options(definition, opts, replication))
            return ids
        except RedisError as exc:
            raise QueueUnavailable(f"could not enqueue jobs {definition.name!r}: {exc}") from exc

    if opts.on_commit:
        # Encode now so a bad payload fails in the caller, not at commit.
        for payload in payloads:
            queue.encode(payload)
        transaction.on_commit(write)
        return []
    return write()
