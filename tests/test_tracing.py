"""Traces (django_jobqueue/tracing.py, docs/observability.md): enqueue() stores the
trace context of a PRODUCER span on the job, and the worker runs the handler in a
CONSUMER span that is its child and links to it. Spans are read from the SDK's
in-memory exporter; without OpenTelemetry nothing changes.

OpenTelemetry's global tracer provider can be set once per process: the first
test here sets an SDK provider (or uses the one already set) and adds to it an
in-memory exporter that keeps spans only while a test of this module runs, so
that the jobs of other tests in the process (under xdist, each worker process
has its own) pile up nowhere. Spans are told apart by their job's id. It adds a
span processor and (when it sets the provider) a sampler that raise on demand,
for the tests of an OpenTelemetry with bugs in it."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from django.db import transaction
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from django_jobqueue import enqueue, enqueue_many, get_queue, job, tracing
from django_jobqueue.engine.exceptions import PayloadError
from django_jobqueue.exceptions import QueuePaused
from django_jobqueue.registry import unregister
from tests.helpers.paths import ROOT
from tests.helpers.redis_data import job_hash
from tests.helpers.workers import drain, worker_env
from tests.testapp.jobs import runs


class WhileTesting(SimpleSpanProcessor):
    """Exports ended spans to an in-memory exporter while ``on``."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.on = False
        super().__init__(self.exporter)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            super().on_end(span)


class EndRaises(SpanProcessor):
    """A span processor with a bug: while ``on``, the end of each of this
    package's spans raises (the test's own spans end well)."""

    on = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.on and span.name.startswith("jobq."):
            raise RuntimeError("span processor bug")


class Sampling(Sampler):
    """The SDK's default sampler, or, while ``raises``, a sampler with a bug."""

    raises = False
    _default = ParentBased(ALWAYS_ON)

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        if self.raises:
            raise KeyError("sampler bug")
        return self._default.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "tests.test_tracing.Sampling"


class Installed:
    """What the first test here adds to the process's tracer provider."""

    def __init__(self, provider: TracerProvider, sampler: Sampling | None) -> None:
        self.processor = WhileTesting()
        self.end_raises = EndRaises()
        self.sampler = sampler  # None where another module set the provider
        provider.add_span_processor(self.processor)
        provider.add_span_processor(self.end_raises)  # after: spans are exported before it raises


_installed: list[Installed] = []


@pytest.fixture
def installed():
    if not _installed:
        provider = trace.get_tracer_provider()
        sampler = None
        if not isinstance(provider, TracerProvider):
            sampler = Sampling()
            trace.set_tracer_provider(TracerProvider(sampler=sampler))
            provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        _installed.append(Installed(provider, sampler))
        # Jobs run by earlier tests may have found no provider: look again now.
        tracing._api.cache_clear()
    return _installed[0]


@pytest.fixture
def spans(installed):
    """The spans that end during the test, in an in-memory exporter."""
    processor = installed.processor
    processor.exporter.clear()
    processor.on = True
    yield processor.exporter
    processor.on = False
    processor.exporter.clear()


@pytest.fixture
def end_raises(installed, spans, monkeypatch, caplog):
    """While the test runs, the end of every span of this package raises; the
    log records of that."""
    monkeypatch.setattr(tracing, "_last_warning", float("-inf"))  # a warning per test
    caplog.set_level(logging.WARNING, logger="django_jobqueue")
    installed.end_raises.on = True
    yield caplog
    installed.end_raises.on = False


@pytest.fixture
def sampler_raises(installed, spans, monkeypatch, caplog):
    """While the test runs, the tracer provider's sampler raises."""
    if installed.sampler is None:
        pytest.skip("the tracer provider was set before this module's tests, with a sampler of its own")
    monkeypatch.setattr(tracing, "_last_warning", float("-inf"))
    caplog.set_level(logging.WARNING, logger="django_jobqueue")
    installed.sampler.raises = True
    yield caplog
    installed.sampler.raises = False


def otel_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("OpenTelemetry raised")]


@pytest.fixture
def tracer(spans):
    return trace.get_tracer("tests.test_tracing")


def named(exporter: InMemorySpanExporter, name: str, job_id: str | None = None) -> list[ReadableSpan]:
    """The finished spans called ``name`` (of job ``job_id``), oldest first."""
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name == name and (job_id is None or s.attributes.get("messaging.message.id") == job_id)
    ]


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.fixture
def seen_in_handler():
    """A job, ``sees_span``, that records the span current while its handler runs."""
    seen: list[trace.SpanContext] = []

    @job(name="sees_span")
    def sees_span(payload, job_obj):
        seen.append(trace.get_current_span().get_span_context())

    yield seen
    unregister("sees_span")


# ----------------------------------------------------------------- enqueue


def test_enqueue_inside_a_span_stores_the_context_of_its_producer_span(r, tracer, spans):
    with tracer.start_as_current_span("request") as request:
        job_id = enqueue("add", {"a": 1, "b": 2})
    (producer,) = named(spans, "jobq.enqueue add")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None and producer.parent.span_id == request.get_span_context().span_id
    assert producer.context.trace_id == request.get_span_context().trace_id
    assert dict(producer.attributes) == {
        "messaging.system": "django_jobqueue",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "jobs",
        "messaging.message.id": job_id,
        "jobq.job.name": "add",
    }
    fields = job_hash(r, job_id)
    assert fields["traceparent"] == traceparent(producer)
    assert "tracestate" not in fields  # the request's span carries none


def test_the_trace_state_of_the_caller_is_stored_too(r, tracer, spans):
    state = trace.TraceState([("vendor", "opaque-value")])
    remote = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(1), trace_state=state)
    with trace.use_span(trace.NonRecordingSpan(remote)):
        job_id = enqueue("add", {"a": 1, "b": 2})
    fields = job_hash(r, job_id)
    assert fields["tracestate"] == "vendor=opaque-value"
    assert fields["traceparent"].startswith(f"00-{0x1234:032x}-")


def test_trace_fields_are_stored_only_while_a_span_is_current(r, tracer, spans):
    before = enqueue("add", {"a": 1, "b": 2})
    with tracer.start_as_current_span("request"):
        inside = enqueue("add", {"a": 1, "b": 2})
    after = enqueue("add", {"a": 1, "b": 2})
    assert [sorted({"traceparent", "tracestate"} & set(job_hash(r, job_id))) for job_id in (before, inside, after)] == [
        [],
        ["traceparent"],
        [],
    ]
    assert [s.attributes["messaging.message.id"] for s in named(spans, "jobq.enqueue add")] == [inside]


def test_enqueue_many_gives_all_its_jobs_one_context(r, tracer, spans):
    with tracer.start_as_current_span("import"):
        ids = enqueue_many("add", [{"a": i, "b": i} for i in range(3)])
    (producer,) = named(spans, "jobq.enqueue add")
    assert producer.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in producer.attributes
    assert {job_hash(r, job_id)["traceparent"] for job_id in ids} == {traceparent(producer)}


@pytest.mark.django_db(transaction=True)
def test_on_commit_keeps_the_context_of_the_call_not_of_the_commit(r, tracer, spans):
    with transaction.atomic():
        with tracer.start_as_current_span("request") as request:
            job_id = enqueue("add", {"a": 1, "b": 2}, on_commit=True)
        # The commit comes after the request's span ended.
    (producer,) = named(spans, "jobq.enqueue add")
    assert producer.parent is not None and producer.parent.span_id == request.get_span_context().span_id
    assert job_hash(r, job_id)["traceparent"] == traceparent(producer)


def test_an_enqueue_that_fails_ends_its_span_in_error(r, tracer, spans):
    get_queue("jobs").pause("in")
    with tracer.start_as_current_span("request"), pytest.raises(QueuePaused):
        enqueue("add", {"a": 1, "b": 2})
    (producer,) = named(spans, "jobq.enqueue add")
    assert producer.status.status_code is StatusCode.ERROR
    assert producer.attributes["error.type"] == f"{QueuePaused.__module__}.QueuePaused"
    assert [event.name for event in producer.events] == ["exception"]


def test_a_task_enqueued_inside_a_span_carries_its_context(r, tracer, spans, settings):
    compat = pytest.importorskip(
        "django_jobqueue.tasks.compat",
        reason="needs django.tasks (Django 6+) or the django-tasks backport",
        exc_type=ImportError,
    )
    from tests.testapp import tasks

    settings.TASKS = {"default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend"}}
    with tracer.start_as_current_span("request"):
        result = tasks.add.enqueue(2, 3)
    name = "django.tasks:tests.testapp.tasks.add"
    (producer,) = named(spans, f"jobq.enqueue {name}")
    assert job_hash(r, result.id)["traceparent"] == traceparent(producer)
    drain()
    (run,) = named(spans, f"jobq.run {name}", result.id)
    assert run.parent is not None and run.parent.span_id == producer.context.span_id
    result.refresh()
    assert result.status == compat.TaskResultStatus.SUCCESSFUL


# ------------------------------------------------------------------ worker


def test_a_worker_runs_the_handler_in_a_span_child_of_and_linked_to_its_enqueue(r, tracer, spans, seen_in_handler):
    with tracer.start_as_current_span("request"):
        job_id = enqueue("sees_span", {})
    (producer,) = named(spans, "jobq.enqueue sees_span")
    worker = drain()
    (run,) = named(spans, "jobq.run sees_span", job_id)
    assert run.kind is SpanKind.CONSUMER
    assert run.context.trace_id == producer.context.trace_id
    assert run.parent is not None and run.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in run.links] == [producer.context.span_id]
    assert dict(run.attributes) == {
        "messaging.system": "django_jobqueue",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.destination.name": "jobs",
        "messaging.message.id": job_id,
        "messaging.client.id": worker.worker_id,
        "jobq.job.name": "sees_span",
        "jobq.attempt": 1,
        "jobq.max_attempts": 3,
    }
    assert run.status.status_code is StatusCode.UNSET
    # The handler ran inside it (so its own spans are the run's children).
    assert [context.span_id for context in seen_in_handler] == [run.context.span_id]
    assert job_hash(r, job_id)["status"] == "completed"


def test_a_failing_handler_gives_an_error_span_per_attempt_with_the_exception(r, tracer, spans):
    with tracer.start_as_current_span("request"):
        job_id = enqueue("boom", {"message": "disk full"})  # max_attempts=2, no backoff
    (producer,) = named(spans, "jobq.enqueue boom")
    drain()
    assert job_hash(r, job_id)["status"] == "failed"
    first, second = named(spans, "jobq.run boom", job_id)
    assert [first.attributes["jobq.attempt"], second.attributes["jobq.attempt"]] == [1, 2]
    for run in (first, second):
        # Every attempt belongs to the enqueue's trace.
        assert run.parent is not None and run.parent.span_id == producer.context.span_id
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "RuntimeError: disk full"
        assert run.attributes["error.type"] == "RuntimeError"
        (event,) = run.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "RuntimeError"
        assert event.attributes["exception.message"] == "disk full"
        assert "in boom" in event.attributes["exception.stacktrace"]


def test_a_handler_that_fails_its_job_itself_gives_an_error_span(r, spans):
    job_id = enqueue("explicit", {"do": "failed"})
    drain()
    run = named(spans, "jobq.run explicit", job_id)[0]
    assert run.attributes["jobq.outcome"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    job_id = enqueue("explicit", {"do": "delete"})
    drain()
    (run,) = named(spans, "jobq.run explicit", job_id)
    assert run.attributes["jobq.outcome"] == "deleted"
    assert run.status.status_code is StatusCode.UNSET


def test_a_job_enqueued_outside_any_trace_runs_in_a_root_span(r, spans, seen_in_handler):
    job_id = enqueue("sees_span", {})
    drain()
    (run,) = named(spans, "jobq.run sees_span", job_id)
    assert run.parent is None and list(run.links) == []
    assert [context.span_id for context in seen_in_handler] == [run.context.span_id]


def test_a_trace_field_that_is_not_a_trace_context_gives_a_root_span(r, spans):
    job_id = enqueue("add", {"a": 1, "b": 2})
    r.hset(f"queue:jobs:job:{job_id}", "traceparent", "not a trace context")
    drain()
    (run,) = named(spans, "jobq.run add", job_id)
    assert run.parent is None and list(run.links) == []
    assert job_hash(r, job_id)["status"] == "completed"


# --------------------------------------------------- OpenTelemetry that raises
# A span processor, sampler or exporter with a bug costs a job its span, never
# its run or its write; one warning a minute says so.


def test_a_span_processor_that_raises_changes_no_job_outcome(r, end_raises):
    ok = enqueue("add", {"a": 1, "b": 2})
    failing = enqueue("boom", {"message": "disk full"})  # max_attempts=2, no backoff
    drain()
    assert len(runs(r, ok)) == 1
    assert job_hash(r, ok)["status"] == "completed"
    # Each attempt ran once, and failed with the handler's error, not the processor's.
    assert len(runs(r, failing)) == 2
    assert job_hash(r, failing)["status"] == "failed"
    assert job_hash(r, failing)["last_error"] == "RuntimeError: disk full"
    (warning,) = otel_warnings(end_raises)  # three spans could not end: one warning
    assert warning.startswith("OpenTelemetry raised while ending a span")


def test_an_enqueue_whose_span_cannot_end_writes_its_jobs_once_and_returns(r, tracer, end_raises):
    with tracer.start_as_current_span("request") as request:
        job_id = enqueue("add", {"a": 1, "b": 2})
        ids = enqueue_many("add", [{"a": 2, "b": 2}, {"a": 3, "b": 3}])
        assert trace.get_current_span() is request  # the enqueue's span is no longer current
    assert sorted(r.lrange("queue:jobs:pending", 0, -1)) == sorted([job_id, *ids])
    assert job_hash(r, job_id)["traceparent"]  # its span began well: its context is stored
    assert len(otel_warnings(end_raises)) == 1


def test_a_sampler_that_raises_changes_no_job_outcome(r, sampler_raises):
    job_id = enqueue("add", {"a": 1, "b": 2})
    drain()
    assert len(runs(r, job_id)) == 1
    assert job_hash(r, job_id)["status"] == "completed"
    (warning,) = otel_warnings(sampler_raises)
    assert warning.startswith("OpenTelemetry raised while starting a job's span")


def test_an_enqueue_whose_span_cannot_start_writes_its_jobs_once_and_returns(r, sampler_raises):
    # A current span that no sampler is asked about (the test's own would raise).
    remote = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(1))
    with trace.use_span(trace.NonRecordingSpan(remote)):
        job_id = enqueue("add", {"a": 1, "b": 2})
        ids = enqueue_many("add", [{"a": 2, "b": 2}])
    assert sorted(r.lrange("queue:jobs:pending", 0, -1)) == sorted([job_id, *ids])
    assert "traceparent" not in job_hash(r, job_id)  # no span, no context to store
    (warning,) = otel_warnings(sampler_raises)
    assert warning.startswith("OpenTelemetry raised while starting an enqueue's span")


def test_a_task_enqueued_while_the_sampler_raises_is_written_and_runs(r, sampler_raises, settings):
    compat = pytest.importorskip(
        "django_jobqueue.tasks.compat",
        reason="needs django.tasks (Django 6+) or the django-tasks backport",
        exc_type=ImportError,
    )
    from tests.testapp import tasks

    settings.TASKS = {"default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend"}}
    remote = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(1))
    with trace.use_span(trace.NonRecordingSpan(remote)):
        result = tasks.add.enqueue(2, 3)
    assert r.lrange("queue:jobs:pending", 0, -1) == [result.id]
    drain()
    result.refresh()
    assert result.status == compat.TaskResultStatus.SUCCESSFUL


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself raised")


@pytest.fixture
def odd_jobs():
    @job(name="returns_object", max_attempts=1)
    def returns_object(payload, job_obj):
        return object()

    @job(name="raises_unprintable", max_attempts=1)
    def raises_unprintable(payload, job_obj):
        raise Unprintable

    yield
    unregister("returns_object")
    unregister("raises_unprintable")


def test_a_result_that_cannot_be_stored_ends_the_span_in_error(r, spans, odd_jobs):
    job_id = enqueue("returns_object", {})
    drain()
    assert job_hash(r, job_id)["status"] == "failed"
    (run,) = named(spans, "jobq.run returns_object", job_id)
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == f"{PayloadError.__module__}.PayloadError"


def test_an_exception_whose_str_raises_still_ends_the_span_in_error(r, spans, odd_jobs):
    job_id = enqueue("raises_unprintable", {})
    drain()
    (run,) = named(spans, "jobq.run raises_unprintable", job_id)
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "Unprintable: <Unprintable: str() failed>"
    assert run.attributes["error.type"] == f"{__name__}.Unprintable"
    (event,) = run.events
    assert event.attributes["exception.message"] == "<Unprintable: str() failed>"
    # The job failed with the handler's exception, not with its __str__'s.
    assert job_hash(r, job_id)["last_error"].startswith("Unprintable: ")


def test_without_a_tracer_provider_a_worker_looks_for_one_at_most_once_a_second():
    now = [100.0]
    provider: list[object] = [trace.ProxyTracerProvider()]  # what OpenTelemetry gives before one is set
    looked_at: list[float] = []

    def get_tracer_provider() -> object:
        looked_at.append(now[0])
        return provider[0]

    api = tracing._Api(clock=lambda: now[0])
    api._provider = get_tracer_provider
    assert not api.provider_set()
    provider[0] = TracerProvider(shutdown_on_exit=False)
    now[0] = 100.9
    assert not api.provider_set()  # the last look is less than a second old
    now[0] = 101.0
    assert api.provider_set()  # a provider set later is found
    now[0] = 105.0
    assert api.provider_set()  # and kept: it can be set only once
    assert looked_at == [100.0, 101.0]


# ------------------------------------------------------ without OpenTelemetry

_WITHOUT_OTEL = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError("opentelemetry is not installed here")
            return None

    sys.meta_path.insert(0, Blocked())
    import django
    django.setup()
    from django_jobqueue import enqueue, enqueue_many, tracing
    from django_jobqueue.connection import get_client
    from django_jobqueue.worker import Worker

    assert tracing.caller_context() is None
    ids = [enqueue("add", {"a": 1, "b": 2}), *enqueue_many("add", [{"a": 2, "b": 2}])]
    assert Worker(burst=True).run(install_signals=False) == 0
    client = get_client()
    for job_id in ids:
        fields = client.hgetall(f"queue:jobs:job:{job_id}")
        assert fields["status"] == "completed", fields
        assert "traceparent" not in fields
    assert not any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in sys.modules)
    print("ran", len(ids))
    """
)


def test_the_app_runs_where_opentelemetry_cannot_be_imported(redis_server):
    env = {**worker_env(redis_server.url), "PYTHONWARNINGS": "error"}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran", "2"]
