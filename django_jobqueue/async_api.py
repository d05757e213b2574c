"""aenqueue() and aenqueue_many(): enqueue() and enqueue_many() for asyncio
code (async views, ASGI consumers, async jobs), awaited on the running
loop's own redis.asyncio client (async_connection.py), with no thread hop.

Same arguments, checks, errors and writes as the synchronous ones (api.py
prepares the call, the engine's AsyncEnqueuer sends what the queue builds):
every bad input fails before anything is written; a Redis error is a
QueueUnavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from redis.exceptions import RedisError

from . import tracing
from .api import (
    _bulk_options,
    _check_preflight,
    _fields,
    _prepare,
    _runs,
    _write_options,
    enqueue,
    enqueue_many,
    resolve,
)
from .async_connection import get_async_client
from .conf import get_settings
from .engine.async_queue import AsyncEnqueuer
from .engine.ids import new_job_id
from .exceptions import InvalidJobOptions, QueueUnavailable
from .registry import JobDefinition


async def aenqueue(
    name_or_function: str | Callable[..., Any] | JobDefinition, payload: Any = None, **options: Any
) -> str:
    """``await aenqueue(name, payload, **options)``: enqueue() from async code;
    returns the job's id (or, with ``unique_key``, the id of the unfinished job
    holding it). ``on_commit=True`` writes at once: async code holds no
    transaction (see docs/async.md)."""
    definition = resolve(name_or_function)
    opts, queue, replication = _prepare(definition, options)
    if replication["replicas"] and get_settings().cluster:
        # WAIT needs the writes' own connection, which redis.asyncio's
        # cluster client does not lend: the synchronous path has it.
        return str(await sync_to_async(enqueue, thread_sensitive=False)(definition, payload, **options))
    payload_json = queue.encode(payload)
    _check_preflight(definition, payload, queue)
    fields = _fields(opts, payload)
    if opts.on_commit:
        await _no_transaction_here()
    job_id = new_job_id()
    caller = tracing.caller_context()
    enqueuer = AsyncEnqueuer(queue, await get_async_client())

    async def add(extra: Any) -> str:
        return await enqueuer.enqueue_encoded(
            payload_json, extra=extra, **_write_options(definition, opts, job_id, replication)
        )

    try:
        if caller is None:
            return await add(fields)
        with tracing.publishing(caller, definition.name, queue.queue_name, fields, job_id=job_id) as extra:
            return await add(extra)
    except RedisError as exc:
        raise QueueUnavailable(f"could not enqueue job {definition.name!r}: {exc}") from exc


async def aenqueue_many(
    name_or_function: str | Callable[..., Any] | JobDefinition, payloads: Iterable[Any], **options: Any
) -> list[str]:
    """``await aenqueue_many(name, payloads, **options)``: enqueue_many() from
    async code, pipelined; every payload is checked before anything is written."""
    definition = resolve(name_or_function)
    if options.get("unique_key"):
        raise InvalidJobOptions("unique_key is given per job: use aenqueue() for unique jobs")
    opts, queue, replication = _prepare(definition, options)
    if replication["replicas"] and get_settings().cluster:
        return list(await sync_to_async(enqueue_many, thread_sensitive=False)(definition, payloads, **options))
    payloads = list(payloads)
    for payload in payloads:
        _check_preflight(definition, payload, queue)
    runs = _runs(opts, queue, payloads)
    if opts.on_commit:
        await _no_transaction_here()
    caller = tracing.caller_context()
    enqueuer = AsyncEnqueuer(queue, await get_async_client())
    ids: list[str] = []
    try:
        for fields, batch in runs:
            with tracing.publishing(caller, definition.name, queue.queue_name, fields, count=len(batch)) as extra:
                ids += await enqueuer.enqueue_many(batch, extra=extra, **_bulk_options(definition, opts, replication))
    except RedisError as exc:
        raise QueueUnavailable(f"could not enqueue jobs {definition.name!r}: {exc}") from exc
    return ids


async def _no_transaction_here() -> None:
    """on_commit=True from async code: Django's atomic() is synchronous, so an
    async caller holds no transaction of its own and the job is written at
    once, as enqueue(on_commit=True) does outside a transaction. Called from
    synchronous code that holds one (async_to_sync inside atomic(), say):
    refuse, as only the synchronous enqueue() there can wait for its commit.
    Django's connections are per thread: the question goes to the thread
    sync_to_async(thread_sensitive=True) runs on, the caller's."""
    if await sync_to_async(_in_atomic_block, thread_sensitive=True)():
        raise InvalidJobOptions(
            "aenqueue(on_commit=True) inside a transaction: call enqueue(on_commit=True) in the "
            "synchronous code that holds the transaction"
        )


def _in_atomic_block() -> bool:
    return bool(transaction.get_connection().in_atomic_block)
