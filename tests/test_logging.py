"""Logs a person can act on: a job's line says what failed, on which attempt,
and what happens next; the traceback at DEBUG (``-v 2``); JSON lines for log
shippers (``--log-format json``, or the formatter in LOGGING)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from django.core.management import load_command_class

from django_jobqueue import enqueue, job
from django_jobqueue.api import get_queue
from django_jobqueue.engine.replies import Outcome
from django_jobqueue.logformat import JSONFormatter
from django_jobqueue.worker.hooks import HookRunner
from django_jobqueue.worker.upkeep import ExhaustedByReclaim
from tests.helpers.paths import ROOT
from tests.helpers.redis_data import job_hash, job_status, register_worker
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain, listen_to_one_event, run_worker, start_worker, stop, worker_env
from tests.testapp.jobs import runs

WORKER_LOG = "django_jobqueue.worker"


@job(name="logging.send_mail", queue="fast", max_attempts=2, requeue_on_failure=True, requeue_delay_seconds=4)
def send_mail(payload, job):
    raise ValueError(f"bad address: {payload['to']}")


def lines_of(caplog, job_id: str) -> list[logging.LogRecord]:
    """The worker's lines about the job ``job_id`` (a line about several jobs names it too)."""
    return [rec for rec in caplog.records if rec.name == WORKER_LOG and getattr(rec, "job_id", None) == job_id]


# ------------------------------------------------------------ the lines


def test_a_retried_attempt_says_what_failed_and_when_the_job_runs_again(caplog):
    job_id = enqueue(send_mail, {"to": "nobody\n\x1b[2J"})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain("fast")
    (line,) = lines_of(caplog, job_id)
    assert line.levelno == logging.WARNING
    # On one line, its control characters shown as escapes.
    assert re.fullmatch(
        rf"job logging\.send_mail {job_id} on queue fast: attempt 1/2 failed after running \d+\.\d ms: "
        r"ValueError: bad address: nobody\\n\\x1b\[2J; retrying in 4\.0 s",
        line.getMessage(),
    )
    fields = {name: getattr(line, name) for name in ("job_id", "job_name", "queue", "attempt", "max_attempts")}
    assert fields == {
        "job_id": job_id,
        "job_name": "logging.send_mail",
        "queue": "fast",
        "attempt": 1,
        "max_attempts": 2,
    }
    assert (line.outcome, line.next_action, line.retry_in_s) == ("failed", "retrying", 4.0)
    assert (line.exc_type, line.exc_message) == ("ValueError", "bad address: nobody\\n\\x1b[2J")


def test_the_last_attempt_says_the_job_is_dead_lettered(r, caplog):
    job_id = enqueue("boom", {"message": "smtp down"})  # max_attempts=2, retried at once
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain()
    first, last = lines_of(caplog, job_id)
    assert re.search(
        r"attempt 1/2 failed after running \d+\.\d ms: RuntimeError: smtp down; retrying in 0\.0 s$", first.getMessage()
    )
    assert last.levelno == logging.ERROR
    assert last.getMessage().endswith(": RuntimeError: smtp down; dead-lettered (no attempts left)")
    assert "attempt 2/2 failed after running" in last.getMessage()
    assert (last.next_action, getattr(last, "retry_in_s", None)) == ("dead-lettered", None)
    assert job_status(r, job_id) == "failed"


def test_a_completed_jobs_line_says_how_long_it_ran(caplog):
    job_id = enqueue("add", {"a": 1, "b": 2})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain()
    (line,) = lines_of(caplog, job_id)
    assert re.fullmatch(rf"job add {job_id} on queue jobs: attempt 1/3 completed, ran \d+\.\d ms", line.getMessage())
    assert (line.job_id, line.queue, line.outcome, line.attempt) == (job_id, "jobs", "completed", 1)
    assert line.duration_ms >= 0


def test_a_huge_message_is_capped_in_the_line(caplog):
    job_id = enqueue("loud_failure", {"size": 50_000}, max_attempts=1)
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain("fast")
    (line,) = lines_of(caplog, job_id)
    assert "ValueError: bad field: xxx" in line.getMessage() and "[cut: " in line.getMessage()
    assert len(line.getMessage()) < 1200


def test_the_traceback_is_logged_at_debug_only(caplog):
    quiet = enqueue(send_mail, {"to": "first"})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain("fast")
    (line,) = lines_of(caplog, quiet)
    assert line.exc_info is None and "Traceback" not in caplog.text

    caplog.clear()
    loud = enqueue(send_mail, {"to": "second"})
    with caplog.at_level(logging.DEBUG, logger=WORKER_LOG):
        drain("fast")
    (line,) = lines_of(caplog, loud)
    assert line.exc_info is not None
    assert "Traceback (most recent call last)" in caplog.text
    assert "raise ValueError(f\"bad address: {payload['to']}\")" in caplog.text
    assert "ValueError: bad address: second" in caplog.text


@pytest.mark.parametrize(
    ("name", "options", "ending"),
    [
        ("add", {"max_attempts": 1}, "dead-lettered (no attempts left)"),
        ("once", {}, "lost (at-most-once)"),
    ],
)
def test_a_job_whose_worker_was_lost_gets_its_line(r, caplog, name, options, ending):
    job_id = enqueue(name, {"a": 1, "b": 2}, **options)
    assert get_queue("jobs").claim_nowait("ghost").id == job_id  # started, then its worker died
    register_worker(r, "ghost", [["jobs", job_id, ""]])
    r.zadd("queue:workers", {"ghost": 0})  # its last beat: long ago
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        drain("jobs", worker_id="ghost")  # a restart under the same id takes its jobs back
    (line,) = lines_of(caplog, job_id)
    assert line.levelno == logging.ERROR
    assert line.getMessage().startswith(f"job {name} {job_id} on queue jobs: attempt 1/")
    assert "cut off: " in line.getMessage() and "worker lost" in line.getMessage()
    assert line.getMessage().endswith(f"; {ending}")
    assert line.next_action == ending.split(" ")[0]


def test_an_at_most_once_job_cut_off_by_the_shutdown_is_logged_lost(r, redis_server):
    proc = start_worker(redis_server.url, "--queue", "jobs", "--grace", "0.2")
    job_id = enqueue("once", {"sleep": 30})
    try:
        wait_for(lambda: runs(r, job_id), what="the job to start")
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert f"job once {job_id} on queue jobs: attempt 1/3 cut off by the shutdown; lost (at-most-once)" in err
    assert job_status(r, job_id) == "lost"


# ------------------------------------------- what the worker's logging survives


class Stop(BaseException):
    """Raised by user code that means no harm: not an Exception."""


class Unprintable(Exception):
    def __init__(self, raising: type[BaseException]) -> None:
        super().__init__()
        self.raising = raising

    def __str__(self) -> str:
        raise self.raising("__str__ failed")


@job(name="logging.unprintable", max_attempts=2, backoff_base_seconds=0)
def unprintable(payload, job):
    raising = {"Stop": Stop, "RuntimeError": RuntimeError}[payload["raising"]]
    if payload["how"] == "raises":
        raise Unprintable(raising)
    job.failed(Unprintable(raising))


@pytest.mark.parametrize("how", ["raises", "job.failed"])
@pytest.mark.parametrize("raising", ["RuntimeError", "Stop"])
def test_an_error_whose_str_raises_fails_the_job_and_the_runner_goes_on(r, caplog, how, raising):
    job_id = enqueue(unprintable, {"how": how, "raising": raising})
    after = enqueue("add", {"a": 1, "b": 2})
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        worker = drain(concurrency=1)  # one runner: the next job runs only if it lives on
    h = job_hash(r, job_id)
    assert (h["status"], h["attempts"]) == ("failed", "2")  # retried, then dead-lettered
    error = "Unprintable: <Unprintable: str() failed>" if how == "raises" else "<Unprintable: str() failed>"
    assert h["last_error"] == error
    first, last = lines_of(caplog, job_id)
    assert first.getMessage().endswith(f"{error}; retrying in 0.0 s")
    assert last.getMessage().endswith(f"{error}; dead-lettered (no attempts left)")
    assert job_status(r, after) == "completed"
    assert (worker.stats.failed, worker.stats.retried, worker.stats.completed) == (1, 1, 1)


class RaisingFilter(logging.Filter):
    """A project's filter with a bug: it raises on every job's line."""

    def filter(self, record):
        if hasattr(record, "job_id"):
            raise KeyError("tenant")
        return True


@pytest.fixture
def raising_filter():
    log = logging.getLogger(WORKER_LOG)
    bad = RaisingFilter()
    log.addFilter(bad)
    yield
    log.removeFilter(bad)


def test_a_logging_filter_that_raises_stops_neither_the_runner_nor_the_hook(r, caplog, capsys, raising_filter):
    flaky = enqueue("flaky", {})  # fails 3 times, then its hook runs
    done = [enqueue("add", {"a": n, "b": 1}, queue="fast") for n in range(3)]
    with caplog.at_level(logging.INFO, logger=WORKER_LOG):
        worker = drain("fast", concurrency=1)
    assert job_hash(r, flaky, "fast")["status"] == "failed" and len(runs(r, flaky)) == 3
    assert [job_status(r, job_id, "fast") for job_id in done] == ["completed"] * 3
    assert worker.stats.processed == 6
    wait_for(lambda: r.lrange("test:exhausted", 0, -1) == [flaky], what="the hook")
    # The failures still show, on stderr, with what the filter raised.
    err = capsys.readouterr().err
    assert f"job flaky {flaky} on queue fast: attempt 3/3 failed after running " in err
    assert "dead-lettered (no attempts left) [logging raised KeyError: 'tenant']" in err


def test_a_logging_filter_that_raises_does_not_skip_the_hook_of_a_job_its_worker_lost(r, capsys, raising_filter):
    job_id = enqueue("flaky", {}, max_attempts=1)
    queue = get_queue("fast")
    claimed = queue.claim_nowait("dead-worker")
    # Its last attempt died with its worker: the sweep (or a reclaim) dead-letters it...
    assert queue.fail_outcome(claimed, "worker lost (heartbeat lapsed)", terminal=True) is Outcome.FAILED
    # ... and hands it to the hooks thread for its line and its hook.
    hooks = HookRunner()
    ExhaustedByReclaim(hooks).submit(queue, [job_id])
    hooks.stop(timeout=30)
    assert r.lrange("test:exhausted", 0, -1) == [job_id]
    assert f"job flaky {job_id} on queue fast: attempt 1/1 cut off: worker lost" in capsys.readouterr().err


# ------------------------------------------------------------- JSON lines


def test_json_lines_parse_and_carry_the_fields(caplog):
    failing = enqueue(send_mail, {"to": "nobody"}, max_attempts=1)
    done = enqueue("add", {"a": 1, "b": 2}, queue="fast")
    with caplog.at_level(logging.DEBUG, logger=WORKER_LOG):
        drain("fast")
    formatter = JSONFormatter()
    (failed,) = [json.loads(formatter.format(rec)) for rec in lines_of(caplog, failing)]
    (completed,) = [json.loads(formatter.format(rec)) for rec in lines_of(caplog, done)]

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", failed["time"])
    assert (failed["level"], failed["logger"]) == ("ERROR", WORKER_LOG)
    assert failed["message"].endswith("ValueError: bad address: nobody; dead-lettered (no attempts left)")
    assert {k: failed[k] for k in ("job_id", "job_name", "queue", "attempt", "max_attempts")} == {
        "job_id": failing,
        "job_name": "logging.send_mail",
        "queue": "fast",
        "attempt": 1,
        "max_attempts": 1,
    }
    assert (failed["outcome"], failed["next_action"]) == ("failed", "dead-lettered")
    assert (failed["exc_type"], failed["exc_message"]) == ("ValueError", "bad address: nobody")
    assert failed["duration_ms"] >= 0 and "retry_in_s" not in failed
    assert failed["exc_info"].startswith("Traceback (most recent call last)")

    assert (completed["level"], completed["outcome"], completed["job_id"]) == ("INFO", "completed", done)
    assert completed["message"].startswith(f"job add {done} on queue fast: attempt 1/3 completed, ran ")
    assert "exc_info" not in completed and "next_action" not in completed


def test_json_lines_write_a_lone_surrogate_as_its_escape_text():
    name = os.fsdecode(b"/srv/caf\xe9.pdf")  # a file name that is not UTF-8
    try:
        raise ValueError(f"cannot read {name}")
    except ValueError:
        record = logging.getLogger(WORKER_LOG).makeRecord(
            WORKER_LOG, logging.ERROR, __file__, 1, "a hook raised on %s", (name,), sys.exc_info()
        )
    record.exc_message = f"cannot read {name}"
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "a hook raised on /srv/caf\\udce9.pdf"
    assert line["exc_message"] == "cannot read /srv/caf\\udce9.pdf"
    assert line["exc_info"].endswith("ValueError: cannot read /srv/caf\\udce9.pdf")
    # What a strict parser asks: text that is Unicode throughout.
    for value in line.values():
        str(value).encode("utf-8")


# A worker process knows the jobs of tests/testapp/jobs.py only: "boom" raises RuntimeError(message).


def test_jobq_worker_log_format_json_writes_one_object_a_line(r, redis_server):
    failing = enqueue("boom", {"message": "nobody"}, max_attempts=1)
    done = enqueue("add", {"a": 1, "b": 2})
    ran = run_worker(redis_server.url, "--burst", "--queue", "jobs", "--log-format", "json", "-v", "2")
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines()]  # every line is JSON
    (failed,) = [line for line in lines if line.get("job_id") == failing]
    (completed,) = [line for line in lines if line.get("job_id") == done]
    assert (failed["next_action"], failed["exc_type"], failed["attempt"]) == ("dead-lettered", "RuntimeError", 1)
    assert failed["exc_info"].endswith("RuntimeError: nobody")  # -v 2: the traceback
    assert (completed["outcome"], completed["queue"]) == ("completed", "jobs")
    assert any(line["message"].startswith("worker ") and "starting" in line["message"] for line in lines)


def test_jobq_worker_prints_the_traceback_at_v2_only(r, redis_server):
    quiet = enqueue("boom", {"message": "first"}, max_attempts=1)
    default = run_worker(redis_server.url, "--burst", "--queue", "jobs")
    assert default.returncode == 0, default.stderr
    assert f"job boom {quiet} on queue jobs: attempt 1/1 failed after running " in default.stderr
    assert "RuntimeError: first; dead-lettered (no attempts left)" in default.stderr
    assert "Traceback" not in default.stderr

    loud = enqueue("boom", {"message": "second"}, max_attempts=1)
    verbose = run_worker(redis_server.url, "--burst", "--queue", "jobs", "-v", "2")
    assert verbose.returncode == 0, verbose.stderr
    _before, rest = verbose.stderr.split(f"job boom {loud} on queue jobs: attempt 1/1 failed", 1)
    line, traceback = rest.split("\n", 1)
    assert line.endswith("RuntimeError: second; dead-lettered (no attempts left)")
    assert traceback.startswith("    | Traceback (most recent call last)")
    assert '    |     raise RuntimeError(payload.get("message", "boom"))\n' in traceback


def test_a_newline_in_an_exception_cannot_fake_a_line_under_v2(r, redis_server):
    fake = "2026-12-06 10:00:00,000 INFO job boom 01FAKE on queue jobs: attempt 1/1 completed, ran 1.0 ms"
    job_id = enqueue("boom", {"message": f"remote said: bad\n{fake}\n\nDuring handling, {fake}"}, max_attempts=1)
    ran = run_worker(redis_server.url, "--burst", "--queue", "jobs", "-v", "2")
    assert ran.returncode == 0, ran.stderr
    assert f"job boom {job_id} on queue jobs: attempt 1/1 failed" in ran.stderr
    assert "    | Traceback (most recent call last)" in ran.stderr
    assert f"    | {fake}\n" in ran.stderr  # shown, as part of the traceback
    lines = ran.stderr.splitlines()
    assert not [line for line in lines if line.startswith("2026-12-06 10:00:00")]
    # Every line is a log line or a traceback's.
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ |    \|", line) for line in lines), lines


LOGGING_DOC = ROOT / "docs" / "observability.md"
# A worker in a process whose settings are the tests' plus LOGGING taken from
# the docs' example (argv[1]): its lines go through the LOGGING handler.
WORKER_WITH_LOGGING = """
import sys
import django
from django.conf import settings
from tests import settings as base

namespace = {}
exec(sys.argv[1], namespace)
values = {name: getattr(base, name) for name in dir(base) if name.isupper()}
settings.configure(**values, LOGGING=namespace["LOGGING"])
django.setup()
from django.core.management import call_command

call_command("jobq_worker", "--burst", "--queue", "jobs")
"""


def test_the_documented_logging_example_writes_json_lines(r, redis_server):
    section = LOGGING_DOC.read_text().split("\n## Logs\n")[1].split("\n## ")[0]
    (example,) = re.findall(r"```python\n(LOGGING = .*?)```", section, re.S)
    failing = enqueue("boom", {"message": "nobody"}, max_attempts=1)
    done = enqueue("add", {"a": 1, "b": 2})
    ran = subprocess.run(
        [sys.executable, "-c", WORKER_WITH_LOGGING, example],
        env=worker_env(redis_server.url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines()]
    (failed,) = [line for line in lines if line.get("job_id") == failing]
    (completed,) = [line for line in lines if line.get("job_id") == done]
    assert (failed["level"], failed["next_action"], failed["exc_message"]) == ("ERROR", "dead-lettered", "nobody")
    assert "exc_info" not in failed  # INFO, as the example sets it
    assert (completed["outcome"], completed["attempt"], completed["max_attempts"]) == ("completed", 1, 3)


# ------------------------------------------------------------- jobq_events


def test_jobq_events_help_says_that_v2_prints_each_event():
    command = load_command_class("django_jobqueue", "jobq_events")
    text = " ".join(command.create_parser("manage.py", "jobq_events").format_help().split())
    assert "With -v 2 it also logs each event it fires" in text
    assert "--log-format {text,json}" in text


def test_jobq_events_logs_each_event_as_json_at_v2(redis_server, tmp_path):
    job_id, log = listen_to_one_event(redis_server.url, tmp_path / "events.log", "--log-format", "json")
    lines = [json.loads(line) for line in log.splitlines()]
    (event,) = [line for line in lines if line["message"] == f"event jobs enqueued job {job_id}"]
    assert (event["level"], event["logger"]) == ("DEBUG", "django_jobqueue.events")
