"""Django's Tasks framework on our queue: JobQueueBackend, run by real workers.

Runs on Django 6.x (django.tasks) and on Django 5.2 with the django-tasks
backport (django_tasks); skipped where neither is installed. The second half
ports the behaviours Django's own tasks tests check for a backend, adapted to
a worker that runs the task later, in another thread or process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import signal
import sys
import threading

import pytest
import redis.connection
from asgiref.sync import async_to_sync
from django.utils import timezone

compat = pytest.importorskip(
    "django_jobqueue.tasks.compat",
    reason="needs django.tasks (Django 6+) or the django-tasks backport",
    exc_type=ImportError,
)

from django_jobqueue import PayloadError, QueueUnavailable, cancel, connection, enqueue, get_queue  # noqa: E402
from django_jobqueue.registry import add_resolver, get_definition  # noqa: E402
from django_jobqueue.tasks import TASK_NAME_PREFIX, JobQueueBackend, TaskAbandoned  # noqa: E402
from django_jobqueue.worker import Worker  # noqa: E402
from django_jobqueue.worker.worker import default_worker_id  # noqa: E402
from tests.helpers.redis_data import job_hash  # noqa: E402
from tests.helpers.waiting import wait_for  # noqa: E402
from tests.helpers.workers import drain, run_worker, start_worker, stop  # noqa: E402
from tests.testapp import tasks as t  # noqa: E402
from tests.testapp.jobs import runs as job_runs  # noqa: E402

Status = compat.TaskResultStatus
BACKEND = "django_jobqueue.tasks.JobQueueBackend"


def use_tasks(settings, **params):
    """Point the "default" TASKS alias at our backend with these params."""
    settings.TASKS = {"default": {"BACKEND": BACKEND, **params}}
    return compat.task_backends["default"]


class Received:
    """Collects Django's task signals (sent from worker threads too)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, type, str, str]] = []
        self.lock = threading.Lock()

    def receiver(self, name: str):
        def receive(sender, task_result, **kwargs):
            with self.lock:
                self.calls.append((name, sender, task_result.id, str(task_result.status)))

        return receive

    def of(self, result_id: str) -> list[tuple[str, str]]:
        return [(name, status) for name, _sender, rid, status in self.calls if rid == result_id]


@pytest.fixture
def received():
    got = Received()
    receivers = {name: got.receiver(name) for name in ("enqueued", "started", "finished")}
    compat.task_enqueued.connect(receivers["enqueued"])
    compat.task_started.connect(receivers["started"])
    compat.task_finished.connect(receivers["finished"])
    yield got
    compat.task_enqueued.disconnect(receivers["enqueued"])
    compat.task_started.disconnect(receivers["started"])
    compat.task_finished.disconnect(receivers["finished"])


# ------------------------------------------------------------ the backend


def test_the_framework_is_djangos_own_where_django_has_it():
    import django

    expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    assert compat.FRAMEWORK == expected


def test_building_the_backend_and_tasks_opens_no_connection(jobq_settings):
    # Nothing listens on port 1: any connection attempt would fail loudly.
    jobq_settings(REDIS_URL="redis://127.0.0.1:1/0")
    backend = JobQueueBackend("other", {"OPTIONS": {"QUEUE_MAP": {"default": [(1, "high"), (-100, "jobs")]}}})
    assert backend.check() == []
    task = compat.task(t.not_a_task)  # validate_task runs here, as in a module's @task
    assert connection._client is None
    with pytest.raises(QueueUnavailable):
        task.enqueue()


def test_flags_say_what_the_backend_supports(settings):
    backend = use_tasks(settings)
    assert isinstance(backend, JobQueueBackend)
    assert backend.supports_defer and backend.supports_async_task and backend.supports_get_result
    # Priority needs bands to be honoured; without them it is not claimed.
    assert backend.supports_priority is False
    banded = use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": [(1, "high"), (-100, "jobs")]}})
    assert banded.supports_priority is True


def test_enqueue_writes_a_plain_job_and_returns_a_ready_result(r, settings):
    use_tasks(settings)
    result = t.add.enqueue(2, b=3)
    assert result.status == Status.READY and not result.is_finished
    assert (result.args, result.kwargs, result.backend) == ([2], {"b": 3}, "default")
    assert result.worker_ids == [] and result.attempts == 0
    h = job_hash(r, result.id)
    assert h["name"] == "django.tasks:tests.testapp.tasks.add"
    assert json.loads(h["payload"]) == {"args": [2], "kwargs": {"b": 3}}
    assert h["status"] == "pending" and r.lrange("queue:jobs:pending", 0, -1) == [result.id]
    assert compat.task_backends["default"].get_result(result.id) == result


def test_a_worker_runs_tasks_beside_jobs(r, settings):
    use_tasks(settings)
    result = t.add.enqueue(2, 3)
    job_id = enqueue("add", {"a": 1, "b": 1})
    worker = drain()
    assert job_hash(r, job_id)["status"] == "completed" and job_runs(r, job_id)
    result.refresh()
    assert result.status == Status.SUCCESSFUL and result.is_finished
    assert result.return_value == 5
    assert result.worker_ids == [worker.worker_id] and result.attempts == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert job_hash(r, result.id)["result"] == "5"


def test_async_tasks_run_in_the_worker(settings):
    use_tasks(settings)
    result = t.async_add.enqueue(1, 2)
    drain()
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    # Awaited on the worker's event loop with the other async jobs, not in a runner thread.
    assert result.return_value == {"sum": 3, "async": True, "thread": "jobq-async"}


def test_takes_context(settings):
    use_tasks(settings)
    result = t.get_task_id.enqueue()
    drain()
    result.refresh()
    assert result.return_value == result.id


def test_failures_are_retried_then_dead_lettered_with_every_traceback(r, settings):
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": "fast"}})  # "fast" retries without backoff
    result = t.failing_value_error.enqueue()
    worker = drain("fast")
    result.refresh()
    assert result.status == Status.FAILED and result.is_finished
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    assert result.attempts == 3 and result.worker_ids == [worker.worker_id] * 3
    assert len(result.errors) == 3
    for error in result.errors:
        assert error.exception_class is ValueError
        assert error.traceback.endswith("ValueError: This task failed due to ValueError\n")
    assert r.lrange("queue:fast:failed", 0, -1) == [result.id]
    assert result.finished_at >= result.started_at


def test_a_retry_that_succeeds_keeps_the_first_error_and_both_attempts(settings):
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": "fast"}})
    result = t.context_report.enqueue("retried")
    worker = drain("fast")
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    # The task saw its second attempt, with both runs in worker_ids.
    assert result.return_value == {"attempt": 2, "worker_ids": [worker.worker_id] * 2}
    assert result.attempts == 2
    assert [e.exception_class for e in result.errors] == [RuntimeError]


def test_a_result_that_is_not_json_fails_the_task(settings):
    use_tasks(settings)
    result = t.complex_return_value.using(max_attempts=1).enqueue()
    drain()
    result.refresh()
    assert result.status == Status.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_signals_follow_the_task(settings, received):
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": "fast"}})
    ok = t.add.enqueue(1, 1)
    retried = t.context_report.enqueue("signals")
    failed = t.failing_value_error.using(max_attempts=2).enqueue()
    assert received.of(ok.id) == [("enqueued", "READY")]
    drain("fast")
    assert received.of(ok.id) == [("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    # An attempt that will be retried is not finished: the result is READY again.
    assert received.of(retried.id) == [
        ("enqueued", "READY"),
        ("started", "RUNNING"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]
    assert received.of(failed.id)[-1] == ("finished", "FAILED")
    assert [name for name, _s in received.of(failed.id)].count("started") == 2
    assert {sender for _n, sender, _i, _s in received.calls} == {JobQueueBackend}


def test_unique_key_returns_the_unfinished_run(settings, received):
    use_tasks(settings)
    first = t.add.using(unique_key="sum:1").enqueue(1, 1)
    again = t.add.using(unique_key="sum:1").enqueue(1, 1)
    assert again.id == first.id
    assert [name for name, _s in received.of(first.id)] == ["enqueued"]  # one enqueue happened
    drain()
    third = t.add.using(unique_key="sum:1").enqueue(1, 1)
    assert third.id != first.id


def test_options_from_using_task_options_and_backend_defaults(r, settings):
    use_tasks(
        settings,
        OPTIONS={"MAX_ATTEMPTS": 5, "TASK_OPTIONS": {"tests.testapp.tasks.noop": {"max_attempts": 2, "ttl": 60}}},
    )
    plain = t.add.enqueue(1, 2)
    per_task = t.noop.enqueue()
    own = t.noop.using(max_attempts=1, ttl=dt.timedelta(seconds=30)).enqueue()
    assert job_hash(r, plain.id)["max_attempts"] == "5"
    assert job_hash(r, per_task.id)["max_attempts"] == "2" and "expires_at_ms" in job_hash(r, per_task.id)
    assert job_hash(r, own.id)["max_attempts"] == "1"
    assert compat.task_backends["default"].get_result(own.id).task.max_attempts == 1


@pytest.mark.skipif(not compat.TASK_DECORATOR_TAKES_OPTIONS, reason="@task(**kwargs) arrived in Django 6.1")
def test_task_decorator_options_carry_ours(r, settings):
    use_tasks(settings)
    assert (t.fails_once_for_good.max_attempts, t.fails_once_for_good.unique_key) == (1, "singleton")
    result = t.fails_once_for_good.enqueue()
    assert t.fails_once_for_good.enqueue().id == result.id  # unique_key="singleton"
    assert job_hash(r, result.id)["max_attempts"] == "1"
    drain()
    result.refresh()
    assert result.status == Status.FAILED and result.attempts == 1


def test_ttl_passing_fails_the_task_with_the_reason(r, settings):
    use_tasks(settings)
    result = t.noop.using(ttl=0.05).enqueue()
    expires = int(job_hash(r, result.id)["expires_at_ms"])

    def redis_now_ms() -> int:
        seconds, micros = r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    wait_for(lambda: redis_now_ms() > expires, what="the ttl to pass")
    get_queue("jobs").sweep()
    result.refresh()
    assert result.status == Status.FAILED and result.worker_ids == []
    assert result.errors[-1].exception_class is TaskAbandoned
    assert "ttl" in result.errors[-1].traceback


def test_a_cancelled_task_is_failed_with_the_reason(settings):
    use_tasks(settings)
    result = t.noop.enqueue()
    cancel(result.id)
    result.refresh()
    assert result.status == Status.FAILED and result.finished_at is not None
    assert result.errors[-1].exception_class is TaskAbandoned
    assert "cancelled" in result.errors[-1].traceback


def test_keep_result_false_forgets_the_task_once_done(settings):
    use_tasks(settings)
    result = t.add.using(keep_result=False).enqueue(1, 1)
    drain()
    with pytest.raises(compat.TaskResultDoesNotExist):
        result.refresh()


# ------------------------------------------------------------- deferring


def _due_ms(r, result_id: str, queue: str = "jobs") -> float | None:
    return r.zscore(f"queue:{queue}:scheduled", result_id)


def _make_due(r, result_id: str, queue: str = "jobs") -> None:
    """Move a deferred job's due time to now: time passing, without waiting."""
    r.zadd(f"queue:{queue}:scheduled", {result_id: 0})


def test_run_after_an_aware_datetime(r, settings):
    use_tasks(settings)
    run_after = timezone.now() + dt.timedelta(hours=1)
    result = t.add.using(run_after=run_after).enqueue(1, 2)
    assert result.status == Status.READY and result.task.run_after == run_after
    assert job_hash(r, result.id)["status"] == "scheduled"
    assert abs(_due_ms(r, result.id) - run_after.timestamp() * 1000) < 60_000
    drain()
    assert job_hash(r, result.id)["status"] == "scheduled"  # not due: the worker left it
    again = compat.task_backends["default"].get_result(result.id)
    assert again.task.run_after == run_after and again.status == Status.READY
    _make_due(r, result.id)
    drain()
    result.refresh()
    assert result.return_value == 3


@pytest.mark.parametrize("use_tz", [True, False])
def test_run_after_a_timedelta(r, settings, use_tz):
    """Django's own validate_task calls timezone.is_aware() on run_after, which
    raises AttributeError for a timedelta under USE_TZ: the backend takes it."""
    settings.USE_TZ = use_tz
    use_tasks(settings)
    before = timezone.now()
    result = t.add.using(run_after=dt.timedelta(hours=1)).enqueue(2, 2)
    assert isinstance(result.task.run_after, dt.datetime)
    assert timezone.is_aware(result.task.run_after) is use_tz
    assert result.task.run_after >= before + dt.timedelta(hours=1)
    assert job_hash(r, result.id)["status"] == "scheduled"
    _make_due(r, result.id)
    drain()
    result.refresh()
    assert result.return_value == 4


def test_run_after_naive_datetime_without_use_tz(r, settings):
    settings.USE_TZ = False
    use_tasks(settings)
    result = t.add.using(run_after=dt.datetime.now() + dt.timedelta(minutes=5)).enqueue(1, 1)
    assert job_hash(r, result.id)["status"] == "scheduled"
    assert compat.task_backends["default"].get_result(result.id).task.run_after == result.task.run_after


def test_run_after_in_the_past_runs_now(r, settings):
    use_tasks(settings)
    result = t.add.using(run_after=timezone.now() - dt.timedelta(days=1)).enqueue(1, 1)
    assert job_hash(r, result.id)["status"] == "pending"


@pytest.mark.parametrize(
    "run_after, message",
    [
        (dt.timedelta(seconds=-1), "negative"),
        (dt.datetime(2030, 1, 1), "aware"),  # naive under USE_TZ
        (30, "datetime or a timedelta"),
    ],
)
def test_bad_run_after_is_refused(settings, run_after, message):
    use_tasks(settings)
    with pytest.raises(compat.InvalidTask, match=message):
        t.add.using(run_after=run_after)


# -------------------------------------------------------------- priority


def test_priority_bands_route_to_queues_a_worker_serves_highest_first(r, settings):
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": [(50, "high"), (-49, "jobs"), (-100, "low")]}})
    plan = [("p-100", -100), ("p0", 0), ("p100", 100), ("p-50", -50), ("p49", 49), ("p50", 50), ("p-49", -49)]
    where = {}
    for tag, priority in plan:
        result = t.ordered.using(priority=priority).enqueue(tag)
        where[tag] = next(q for q in ("high", "jobs", "low") if r.exists(f"queue:{q}:job:{result.id}"))
        assert compat.task_backends["default"].get_result(result.id).task.priority == priority
    assert where == {
        "p100": "high",
        "p50": "high",
        "p49": "jobs",
        "p0": "jobs",
        "p-49": "jobs",
        "p-50": "low",
        "p-100": "low",
    }
    drain("high", "jobs", "low", concurrency=1)
    # Bands in priority order; first come, first served within a band.
    assert r.lrange("test:task-order", 0, -1) == ["p100", "p50", "p0", "p49", "p-49", "p-100", "p-50"]


def test_priority_without_bands_is_refused_not_ignored(settings):
    use_tasks(settings)
    with pytest.raises(compat.InvalidTask, match="Backend does not support setting priority"):
        t.add.using(priority=10)
    # Bands on one Django queue do not make priority meaningful on another.
    use_tasks(settings, QUEUES=[], OPTIONS={"QUEUE_MAP": {"urgent": [(1, "high"), (-100, "jobs")]}})
    assert t.add.using(queue_name="urgent", priority=10).queue_name == "urgent"
    with pytest.raises(compat.InvalidTask, match="Queue 'default' has no priority bands"):
        t.add.using(priority=10)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"NOPE": 1}, "unknown key"),
        ({"QUEUE_MAP": {"default": [(200, "high")]}}, "min_priority"),
        ({"QUEUE_MAP": {"default": [(0, "high"), (0, "low")]}}, "same min_priority"),
        ({"QUEUE_MAP": {"default": 3}}, "queue name or a list"),
        ({"MAX_ATTEMPTS": 0}, "max_attempts"),
        ({"TASK_OPTIONS": {"x.y": {"on_commit": True}}}, "unknown option"),
    ],
)
def test_bad_options_are_configuration_errors(options, message):
    with pytest.raises(compat.InvalidTaskBackend, match=message):
        JobQueueBackend("default", {"OPTIONS": options})


def test_system_check_names_a_queue_jobqueue_does_not_have():
    backend = JobQueueBackend(
        "default", {"QUEUES": ["default", "emails"], "OPTIONS": {"QUEUE_MAP": {"default": "jobs"}}}
    )
    errors = backend.check()
    assert [e.id for e in errors] == ["django_jobqueue.E010"]
    assert "'emails'" in errors[0].msg


def test_system_check_says_when_django_jobqueue_is_not_an_installed_app(settings):
    """Without the app there is no jobq_worker command: enqueued tasks would
    never run. The backend says so, as django-tasks' DatabaseBackend does."""
    from django.core.checks import run_checks
    from django.core.checks.registry import registry
    from django.test import override_settings

    use_tasks(settings)
    backend = JobQueueBackend("default", {})
    assert backend.check() == []
    without = [a for a in settings.INSTALLED_APPS if a != "django_jobqueue"]
    with override_settings(INSTALLED_APPS=without):
        errors = backend.check()
    assert [e.id for e in errors] == ["django_jobqueue.E011"]
    assert "'django_jobqueue'" in errors[0].msg and "INSTALLED_APPS" in errors[0].msg
    assert "INSTALLED_APPS" in errors[0].hint and errors[0].is_serious()

    # Through Django's own run of the checks, as manage.py check does it. The
    # backport registers its backend checks when its app is installed (docs/tasks.md).
    backport = ["django_tasks"] if compat.FRAMEWORK == "django_tasks" else []
    registered = set(registry.registered_checks)
    try:
        with override_settings(INSTALLED_APPS=[*without, *backport]):
            assert "django_jobqueue.E011" in [e.id for e in run_checks()]
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, *backport]):
            assert "django_jobqueue.E011" not in [e.id for e in run_checks()]
    finally:
        registry.registered_checks = registered  # as this process had them


def test_a_queue_jobqueue_does_not_have_is_refused_at_enqueue(settings, r):
    use_tasks(settings, QUEUES=[])
    with pytest.raises(compat.InvalidTask, match="unknown queue 'emails'"):
        t.add.using(queue_name="emails").enqueue(1, 1)
    assert r.dbsize() == 0


# ---------------------------------------------- names written into Redis


@pytest.mark.parametrize(
    "path",
    [
        "os.system",  # importable, but not a Task
        "tests.testapp.tasks.not_a_task",  # a plain function beside the tasks
        "tests.testapp.jobs.add",  # an @job handler, not a Task
        "tests.testapp.tasks.RUNS",
        "antigravity.fly",  # outside every installed app: not even imported
        "tests.testapp.tasks.add.func",
        "../../etc/passwd",
        "",
    ],
)
def test_a_task_name_written_by_hand_is_dead_lettered_not_run(r, settings, tmp_path, path):
    use_tasks(settings)
    marker = tmp_path / "pwned"
    job_id = get_queue("jobs").enqueue({"args": [f"touch {marker}"], "kwargs": {}}, name=TASK_NAME_PREFIX + path)
    good = t.add.enqueue(1, 1)
    drain()
    h = job_hash(r, job_id)
    assert h["status"] == "failed" and r.lrange("queue:jobs:failed", 0, -1) == [job_id]
    assert "refusing" in h["last_error"] or "not" in h["last_error"]
    assert not marker.exists() and t.runs(r, "not_a_task") == []
    assert "antigravity" not in sys.modules
    assert job_hash(r, good.id)["status"] == "completed"
    with pytest.raises(compat.TaskResultDoesNotExist):
        compat.task_backends["default"].get_result(job_id)


def test_registry_resolvers_are_only_asked_about_their_prefix():
    from django_jobqueue import UnknownJobError, registry
    from django_jobqueue.registry import JobDefinition

    asked = []

    def resolver(name):
        asked.append(name)
        return JobDefinition(name=name, func=lambda payload, job: None)

    add_resolver("test-prefix:", resolver)
    try:
        assert get_definition("test-prefix:x").name == "test-prefix:x"
        with pytest.raises(UnknownJobError):
            get_definition("other:x")
        assert asked == ["test-prefix:x"]
        assert get_definition("django.tasks:tests.testapp.tasks.add").name == "django.tasks:tests.testapp.tasks.add"
    finally:
        registry._resolvers.pop("test-prefix:")


# ------------------------------------------------------- real processes


def test_a_real_worker_process_runs_tasks(r, settings, redis_server):
    use_tasks(settings)
    sync = t.add.enqueue(20, 22)
    coro = t.async_add.enqueue(1, 1)
    done = run_worker(redis_server.url, "--burst")
    assert done.returncode == 0, done.stderr
    sync.refresh()
    coro.refresh()
    assert sync.return_value == 42 and coro.return_value == {"sum": 2, "async": True, "thread": "jobq-async"}
    (worker_id,) = sync.worker_ids
    assert worker_id != default_worker_id()  # ran in the other process
    # worker ids are host.pid.random; the run recorded its process's pid
    assert [entry.rsplit(":", 1)[1] for entry in t.runs(r, "add")] == [worker_id.split(".")[-2]]


def test_a_worker_killed_mid_task_loses_the_attempt_not_the_task(r, settings, redis_server):
    """SIGKILL a worker while it runs a task: the lease brings the task back, a
    second worker finishes it, and worker_ids names both."""
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": "fast"}})  # 1.2 s leases
    result = t.wait_for_go.enqueue("crash")
    first = start_worker(redis_server.url, "--queue", "fast")
    try:
        wait_for(lambda: t.runs(r, "crash"), what="the first attempt to start")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    second = start_worker(redis_server.url, "--queue", "fast")
    try:
        wait_for(lambda: job_hash(r, result.id, "fast").get("status") == "completed", timeout=30, what="the rerun")
    finally:
        code, _out, err = stop(second)
    assert code == 0, err
    result.refresh()
    assert result.status == Status.SUCCESSFUL and result.attempts == 2
    # worker ids are host.pid.random
    assert [w.split(".")[-2] for w in result.worker_ids] == [str(first.pid), str(second.pid)]
    assert result.return_value == second.pid


# ------------------------------------- Django's backend tests, on a worker
#
# Django's own tests for a backend (tests/tasks in Django) check the contract
# below; here the task runs in a worker, and the result is read back from Redis.


def test_using_correct_backend(settings):
    use_tasks(settings)
    backend = compat.task_backends["default"]
    assert isinstance(backend, JobQueueBackend)
    assert backend.alias == "default" and backend.options == {}


def test_enqueue_task_sync_and_async_functions(settings):
    use_tasks(settings)
    tasks = (t.noop, t.async_noop)
    results = [task.enqueue(1, two=3) for task in tasks]
    drain()
    for task, result in zip(tasks, results, strict=True):
        result.refresh()
        assert result.status == Status.SUCCESSFUL and result.is_finished
        assert result.started_at and result.last_attempted_at and result.finished_at
        assert result.finished_at >= result.started_at >= result.enqueued_at
        assert result.return_value is None
        assert result.task == task
        assert (result.args, result.kwargs) == ([1], {"two": 3})
        assert result.attempts == 1


def test_aenqueue_aget_result_and_arefresh(settings):
    use_tasks(settings)
    backend = compat.task_backends["default"]

    async def enqueue_it():
        return await t.calculate_meaning_of_life.aenqueue()

    result = async_to_sync(enqueue_it)()
    assert result.status == Status.READY
    drain()

    async def read_back():
        fetched = await backend.aget_result(result.id)
        via_task = await t.calculate_meaning_of_life.aget_result(result.id)
        await result.arefresh()
        return fetched, via_task

    fetched, via_task = async_to_sync(read_back)()
    assert fetched.return_value == via_task.return_value == result.return_value == 42


def test_catches_exceptions(settings):
    use_tasks(settings)
    cases = [
        (t.failing_value_error, ValueError, "This task failed due to ValueError"),
        (t.failing_system_exit, SystemExit, "This task failed due to SystemExit"),
    ]
    results = [task.using(max_attempts=1).enqueue() for task, _e, _m in cases]
    drain()
    for result, (task, exception, message) in zip(results, cases, strict=True):
        result.refresh()
        assert result.status == Status.FAILED and result.is_finished
        with pytest.raises(ValueError, match="Task failed"):
            result.return_value  # noqa: B018
        assert result.errors[0].exception_class is exception
        assert result.errors[0].traceback.endswith(f"{exception.__name__}: {message}\n")
        assert result.task == task.using(max_attempts=1) and result.args == [] and result.kwargs == {}


def test_complex_exception(settings):
    use_tasks(settings)
    result = t.complex_exception.using(max_attempts=1).enqueue()
    drain()
    result.refresh()
    assert result.status == Status.FAILED and result._return_value is None
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback


def test_enqueue_logs(settings, caplog):
    use_tasks(settings)
    caplog.set_level(logging.DEBUG, logger=compat.FRAMEWORK)
    result = t.noop.enqueue()
    drain()
    lines = [
        rec.getMessage() for rec in caplog.records if rec.name == compat.FRAMEWORK and result.id in rec.getMessage()
    ]
    assert len(lines) == 3
    assert "enqueued" in lines[0] and "state=RUNNING" in lines[1] and "state=SUCCESSFUL" in lines[2]


def test_failed_logs(settings, caplog):
    use_tasks(settings)
    caplog.set_level(logging.DEBUG, logger=compat.FRAMEWORK)
    result = t.failing_value_error.using(max_attempts=1).enqueue()
    drain()
    lines = [rec for rec in caplog.records if rec.name == compat.FRAMEWORK and result.id in rec.getMessage()]
    assert "state=FAILED" in lines[-1].getMessage() and lines[-1].levelno == logging.ERROR


def test_get_result_and_refresh(settings):
    use_tasks(settings)
    backend = compat.task_backends["default"]
    result = t.calculate_meaning_of_life.enqueue()
    assert backend.get_result(result.id) == result
    assert t.calculate_meaning_of_life.get_result(result.id) == result
    drain()
    assert result.status == Status.READY
    result.refresh()
    assert result.status == Status.SUCCESSFUL and result.return_value == 42


@pytest.mark.parametrize("result_id", ["123", "0" * 36, "queue:jobs:job:x", ""])
def test_get_missing_result(settings, result_id):
    use_tasks(settings)
    with pytest.raises(compat.TaskResultDoesNotExist):
        compat.task_backends["default"].get_result(result_id)


def test_a_plain_job_is_not_a_task_result(settings):
    use_tasks(settings)
    job_id = enqueue("add", {"a": 1, "b": 2})
    with pytest.raises(compat.TaskResultDoesNotExist):
        compat.task_backends["default"].get_result(job_id)


def test_get_result_of_another_task_is_a_mismatch(settings):
    use_tasks(settings)
    result = t.add.enqueue(1, 1)
    with pytest.raises(compat.TaskResultMismatch):
        t.noop.get_result(result.id)


def test_validate_on_enqueue(settings):
    task = t.noop.using(queue_name="unknown_queue")
    use_tasks(settings, QUEUES=["queue-1"])
    with pytest.raises(compat.InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        task.enqueue()


def test_validate_on_aenqueue(settings):
    task = t.noop.using(queue_name="unknown_queue")
    use_tasks(settings, QUEUES=["queue-1"])

    async def go():
        await task.aenqueue()

    with pytest.raises(compat.InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        async_to_sync(go)()


@pytest.mark.parametrize("priority", [-101, 101, 1.5])
def test_invalid_priority(settings, priority):
    use_tasks(settings, OPTIONS={"QUEUE_MAP": {"default": [(1, "high"), (-100, "jobs")]}})
    with pytest.raises(compat.InvalidTask, match="priority must be a whole number"):
        t.noop.using(priority=priority)


def test_task_must_be_module_level(settings):
    use_tasks(settings)

    def local_function():
        pass

    with pytest.raises(compat.InvalidTask, match="module level"):
        compat.task(local_function)


def test_arguments_must_be_json(settings, r):
    use_tasks(settings)
    with pytest.raises(TypeError, match="Unsupported type"):
        t.noop.enqueue(object())
    with pytest.raises(PayloadError):
        t.noop.enqueue("x" * (2 * 1024 * 1024))
    assert r.dbsize() == 0


# ------------------------------------------------------------ on a schedule


def test_a_task_runs_on_a_schedule(r, settings, jobq_settings, clock):
    from django_jobqueue.engine.schedules import ScheduleStore
    from django_jobqueue.queue import RedisJobQueue
    from django_jobqueue.schedules import all_schedules

    use_tasks(settings)
    jobq_settings(SCHEDULES={"meaning": {"task": "tests.testapp.tasks.add", "args": [2, 3], "every": 60}})
    (schedule,) = all_schedules()
    assert (schedule.job, schedule.payload_json) == (
        TASK_NAME_PREFIX + "tests.testapp.tasks.add",
        '{"args":[2,3],"kwargs":{}}',
    )
    store = ScheduleStore(RedisJobQueue(r, schedule.queue, clock=clock))
    store.sync([schedule], clock())
    clock.advance(60)
    (job_id,) = store.tick(schedule, int(store.state("meaning")["next_ms"]), clock())
    drain()
    result = compat.task_backends["default"].get_result(job_id)
    assert result.status == Status.SUCCESSFUL and result.return_value == 5


def test_a_task_schedule_takes_args_and_kwargs_not_a_payload(jobq_settings):
    from django_jobqueue.checks import check_schedules

    jobq_settings(SCHEDULES={"meaning": {"task": "tests.testapp.tasks.add", "payload": {}, "every": 60}})
    (error,) = check_schedules()
    assert "schedule 'meaning'" in error.msg and "not both" in error.msg


def test_the_backends_async_api_is_native_on_the_loops_own_client(settings, monkeypatch, r):
    """aenqueue and aget_result never reach the synchronous client (which a
    thread hop through enqueue/get_result would use): they await the loop's."""
    use_tasks(settings)
    backend = compat.task_backends["default"]

    def no_sync_io(*args, **kwargs):
        raise AssertionError("a synchronous Redis connection was used from async code")

    async def both():
        result = await t.calculate_meaning_of_life.aenqueue()
        return result, await backend.aget_result(result.id)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", no_sync_io)
    result, fetched = asyncio.run(both())
    monkeypatch.undo()
    assert fetched.id == result.id and fetched.status == Status.READY
    drain()
    assert asyncio.run(backend.aget_result(result.id)).return_value == 42


def test_an_async_task_cut_off_by_the_shutdown_is_handed_back_not_failed(settings, r):
    """The shutdown's cancellation at the end of the grace period is no
    failure of the task: the job goes back to the queue, no attempt failed,
    no task_finished."""
    use_tasks(settings)
    result = t.async_sleep.enqueue(60)
    worker = Worker(["jobs"], grace_seconds=0.3, scheduler=False)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    wait_for(lambda: t.runs(r, "async_sleep"), what="the task to start")
    worker.stop()
    thread.join(30)
    fields = job_hash(r, result.id)
    assert fields["status"] == "pending" and not fields.get("last_error")
    result.refresh()
    assert result.status == Status.READY and result.errors == []
