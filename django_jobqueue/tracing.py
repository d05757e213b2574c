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
of the current span, and a worker with no tracer provider set makes no spans (it looks for
one at most once a second).

Tracing never changes what happens to a job: every call into OpenTelemetry here is guarded, so
that a span processor, sampler or exporter that raises costs the job its span, never its run or
its write. Such errors are logged as warnings of the ``django_jobqueue`` logger, at most once a
minute.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .engine.errortext import cap_error, failure_text, format_traceback, safe_str

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind, Tracer
    from opentelemetry.util.types import AttributeValue

    from .engine.replies import ClaimedJob
    from .worker.job import Job

logger = logging.getLogger("django_jobqueue")

# The job hash fields holding the W3C trace context of the enqueue.
TRACE_FIELDS = ("traceparent", "tracestate")
SYSTEM = "django_jobqueue"
# Returned where there is nothing to trace: one shared object, no allocation.
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()
# How long a worker with no tracer provider goes before it looks again: the
# look-up reads the environment (some 0.8 us), too much to pay on every job.
PROVIDER_RECHECK_S = 1.0
# An OpenTelemetry that raises on every span would raise on every job: one
# warning a minute says so without filling the log.
WARN_EVERY_S = 60.0

_TRACE_MODULE = "opentelemetry.trace"
_last_warning = float("-inf")


def _loaded() -> bool:
    return sys.modules.get(_TRACE_MODULE) is not None


def _otel_failed(doing: str) -> None:
    """Called from an ``except`` block around a call into OpenTelemetry: a
    warning with the traceback, unless one was logged in the last minute.
    Never raises (a logging handler or filter may)."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning < WARN_EVERY_S:
        return
    # Two threads failing at once may both log: harmless, and no lock to take.
    _last_warning = now
    try:
        logger.warning(
            "OpenTelemetry raised while %s; the span may be missing or incomplete, the job is "
            "not affected (such errors are logged at most once a minute)",
            doing,
            exc_info=True,
        )
    except Exception:  # noqa: BLE001, S110 - a broken logging setup must not break the job either
        pass


class _Api:
    """The OpenTelemetry functions used on every enqueue and job, looked up once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from opentelemetry import context, trace

        self.current_span: Callable[[], Span] = trace.get_current_span
        self.current_context: Callable[[], Context] = context.get_current
        self._provider = trace.get_tracer_provider
        self._no_provider = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._clock = clock
        self._provider_set = False
        self._look_again_at = float("-inf")

    def provider_set(self) -> bool:
        """Whether spans go anywhere: a tracer provider was set. OpenTelemetry
        takes one provider per process, so once set it is set for good; until
        then, looked for at most once every PROVIDER_RECHECK_S."""
        if self._provider_set:
            return True
        now = self._clock()
        if now < self._look_again_at:
            return False
        self._look_again_at = now + PROVIDER_RECHECK_S
        try:
            self._provider_set = not isinstance(self._provider(), self._no_provider)
        except Exception:  # noqa: BLE001 - e.g. a provider named in the environment that cannot be loaded
            _otel_failed("looking up the tracer provider")
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
    try:
        api = _api()
        if not api.current_span().get_span_context().is_valid:
            return None
        return api.current_context()
    except Exception:  # noqa: BLE001 - no trace is better than no enqueue
        _otel_failed("looking up the current span")
        return None


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
    context, or if OpenTelemetry raises: ``fields`` as they are, and no span."""
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
    """The span of a call that raised: status ERROR, error.type, and the
    exception as an event (message and traceback capped as the job's stored
    ones are)."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc)
    error_type = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    # Texts that survive an exception whose __str__ raises.
    span.set_status(Status(StatusCode.ERROR, failure_text(exc)))
    span.set_attribute("error.type", error_type)
    # The event record_exception() would add, written here: the SDK's calls
    # str(exc) unguarded, and formats a whole traceback that would be replaced.
    span.add_event(
        "exception",
        {
            "exception.type": error_type,
            "exception.message": cap_error(safe_str(exc)),
            "exception.stacktrace": format_traceback(exc),
            "exception.escaped": "True",
        },
    )


class _Span:
    """A span made current for the length of a with block, and ended by it.
    Nothing OpenTelemetry raises leaves it: a span that cannot be started is
    not made, one that cannot be ended well is ended as it is."""

    _span: Span | None = None
    _token: Token[Context] | None = None

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
        # Returns None: the block's own exception, if any, goes on unchanged.
        span = self._span
        if span is None:
            return
        try:
            if exc is not None:
                _failed(span, exc)
            else:
                self._ended_well(span)
        except Exception:  # noqa: BLE001 - the span may say less; the job is unaffected
            _otel_failed("recording how a span ended")
        self._close()

    def _close(self) -> None:
        """Detaches and ends what was started, each once."""
        token, span = self._token, self._span
        self._token = self._span = None
        if token is not None:
            from opentelemetry import context

            try:
                context.detach(token)
            except Exception:  # noqa: BLE001
                _otel_failed("detaching a span's context")
        if span is not None:
            try:
                span.end()
            except Exception:  # noqa: BLE001 - e.g. a span processor's on_end
                _otel_failed("ending a span")

    def _ended_well(self, span: Span) -> None:
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
        try:
            return self._begin()
        except Exception:  # noqa: BLE001 - the job is written without a trace context
            _otel_failed("starting an enqueue's span")
            self._close()
            return self._fields

    def _begin(self) -> Mapping[str, str] | None:
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
        try:
            self._begin()
        except Exception:  # noqa: BLE001 - the handler runs without a span
            _otel_failed("starting a job's span")
            self._close()

    def _begin(self) -> None:
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

    def _ended_well(self, span: Span) -> None:
        outcome = self._job.outcome
        if outcome is not None:
            # The handler chose its outcome itself (job.failed(), requeue(), ...).
            span.set_attribute("jobq.outcome", outcome)
            if outcome == "failed":
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, "the handler called job.failed()"))
