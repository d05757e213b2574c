"""Traces through OpenTelemetry, for a process that uses it (the extra ``django-jobqueue[opentelemetry]``).

enqueue() writes the job inside a PRODUCER span, ``jobq.enqueue <job name>``, child of the
caller's span, and stores that span's W3C trace context on the job (the ``traceparent`` and
``tracestate`` fields). The worker runs the handler inside a CONSUMER span, ``jobq.run <job
name>``, child of the stored context and linked to it, as the messaging conventions ask of a
"process" span.

This module never imports OpenTelemetry on its own. A process whose code has not imported
``opentelemetry.trace`` has no span to pass on and no tracer provider to report to, so every
function here first looks the module up in ``sys.modules`` and, absent, does nothing more:
without the package, tracing costs one dict look-up per enqueue and per job. With it loaded
(redis-py 8 loads it when it is installed), an enqueue with no current span costs a look-up
of the current span, and a worker with no tracer provider set makes no spans.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .engine.errortext import cap_error, failure_text, format_traceback

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue

    from .engine.replies import ClaimedJob
    from .worker.job import Job

# The job hash fields holding the W3C trace context of the enqueue.
TRACE_FIELDS = ("traceparent", "tracestate")
SYSTEM = "django_jobqueue"
# Returned where there is nothing to trace: one shared object, no allocation.
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


_TRACE_MODULE = "opentelemetry.trace"


def _loaded() -> bool:
    return sys.modules.get(_TRACE_MODULE) is not None


class _Api:
    """The OpenTelemetry functions used on every enqueue and job, looked up once."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.current_span: Callable[[], Span] = trace.get_current_span
        self.current_context: Callable[[], Context] = context.get_current
        self._provider = trace.get_tracer_provider
        self._no_provider = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._provider_set = False

    def provider_set(self) -> bool:
        """Whether spans go anywhere: a tracer provider was set. OpenTelemetry
        takes one provider per process, so once set it is set for good."""
        if not self._provider_set:
            self._provider_set = not isinstance(self._provider(), self._no_provider)
        return self._provider_set


@functools.cache
def _api() -> _Api:
    return _Api()


@functools.cache
def _tracer() -> Tracer:
    # The global provider's tracer, or a proxy that turns into it once a
    # provider is set: asked for once, whenever the provider comes.
    from opentelemetry import trace

    from . import __version__

    return trace.get_tracer(SYSTEM, __version__)


def caller_context() -> Context | None:
    """The caller's context when a valid span is current in it, else None.
    Taken when enqueue() is called, so that a write deferred to the commit
    (``on_commit``) still belongs to the caller's trace."""
    if sys.modules.get(_TRACE_MODULE) is None:  # _loaded(), inline: this runs on every enqueue
        return None
    api = _api()
    if not api.current_span().get_span_context().is_valid:
        return None
    return api.current_context()


def publishing(
    caller: Context | None,
    name: str,
    queue: str,
    fields: Mapping[str, str] | None,
    *,
    job_id: str = "",
    count: int = 1,
) -> contextlib.AbstractContextManager[Mapping[str, str] | None]:
    """Around the write of ``count`` jobs of ``name``: gives the job hash
    fields to write, ``fields`` plus the trace context of a PRODUCER span
    (child of ``caller``) that lasts as long as the block. Without a caller
    context: ``fields`` as they are, and no span."""
    if caller is None:
        return contextlib.nullcontext(fields)
    return _Publishing(caller, name, queue, fields, job_id, count)


def running(queue: str, claimed: ClaimedJob, job: Job) -> contextlib.AbstractContextManager[None]:
    """Around the call of a job's handler: a CONSUMER span, current while the
    handler runs, that ends when it returns or raises. None while no tracer
    provider is set: such a span would be recorded nowhere."""
    if not _loaded() or not _api().provider_set():
        return _NOTHING
    return _Running(queue, claimed, job)


def _failed(span: Span, exc: BaseException) -> None:
    """The span of a call that raised: the exception as an event (message and
    traceback capped as the job's stored ones are), status ERROR, error.type."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc)
    error_type = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    span.record_exception(
        exc,
        {"exception.message": cap_error(str(exc)), "exception.stacktrace": format_traceback(exc)},
        escaped=True,
    )
    span.set_status(Status(StatusCode.ERROR, failure_text(exc)))
    span.set_attribute("error.type", error_type)


class _Span:
    """A span made current for the length of a with block, and ended by it."""

    _span: Span
    _token: Token[Context]

    def _start(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
    ) -> Span:
        from opentelemetry import context, trace

        # Errors are recorded by __exit__, which caps what they carry.
        span = _tracer().start_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        from opentelemetry import context

        try:
            if exc is not None:
                _failed(self._span, exc)
            else:
                self._ended_well()
        finally:
            context.detach(self._token)
            self._span.end()

    def _ended_well(self) -> None:
        pass


class _Publishing(_Span):
    def __init__(
        self, caller: Context, name: str, queue: str, fields: Mapping[str, str] | None, job_id: str, count: int
    ) -> None:
        self._caller = caller
        self._name = name
        self._queue = queue
        self._fields = fields
        self._job_id = job_id
        self._count = count

    def __enter__(self) -> Mapping[str, str] | None:
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes: dict[str, AttributeValue] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
            "messaging.destination.name": self._queue,
            "jobq.job.name": self._name,
        }
        if self._job_id:
            attributes["messaging.message.id"] = self._job_id
        else:
            attributes["messaging.batch.message_count"] = self._count
        span = self._start(f"jobq.enqueue {self._name}", self._caller, SpanKind.PRODUCER, attributes)
        carrier = dict(self._fields or {})
        # W3C Trace Context, not the global propagator, whose fields could be
        # any names (b3, baggage, ...): the job hash's fields are fixed.
        TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
        return carrier or None


class _Running(_Span):
    def __init__(self, queue: str, claimed: ClaimedJob, job: Job) -> None:
        self._queue = queue
        self._claimed = claimed
        self._job = job

    def __enter__(self) -> None:
        from opentelemetry.trace import Link, SpanKind

        claimed = self._claimed
        attributes: dict[str, AttributeValue] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": self._queue,
            "messaging.message.id": claimed.id,
            "jobq.job.name": claimed.name,
            "jobq.attempt": claimed.attempts,
            "jobq.max_attempts": claimed.max_attempts,
        }
        worker = claimed.fields.get("worker")
        if worker:
            attributes["messaging.client.id"] = worker
        parent = None
        links: list[Link] = []
        if TRACE_FIELDS[0] in claimed.fields:
            from opentelemetry.trace import get_current_span
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            parent = TraceContextTextMapPropagator().extract(claimed.fields)
            enqueued = get_current_span(parent).get_span_context()
            if enqueued.is_valid:
                links.append(Link(enqueued))
            else:
                parent = None  # a field that is not a trace context: a root span
        self._start(f"jobq.run {claimed.name}", parent, SpanKind.CONSUMER, attributes, links)

    def _ended_well(self) -> None:
        outcome = self._job.outcome
        if outcome is not None:
            # The handler chose its outcome itself (job.failed(), requeue(), ...).
            self._span.set_attribute("jobq.outcome", outcome)
            if outcome == "failed":
                from opentelemetry.trace import Status, StatusCode

                self._span.set_status(Status(StatusCode.ERROR, "the handler called job.failed()"))
