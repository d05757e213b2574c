"""What failed jobs leave behind, and what the shell and the demo show of it.

* Error text and tracebacks are capped (django_jobqueue/engine/errortext.py): a handler
  quoting a 900 KB field leaves kilobytes, not megabytes, in the job hash, its
  error log, its events and a task's per-attempt errors.
* The management commands print stored text with its control characters
  escaped (django_jobqueue/terminal.py): no escape sequence from Redis reaches
  the operator's terminal.
* The demo project keeps its own keys, DEBUG off, and visitors' addresses off
  its open pages; with Redis down, its live page says so (a JSON 503 for its
  script, a banner), where a server error page used to reach its JSON parser.
"""

from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
import time
import unicodedata
from collections.abc import Iterator
from types import ModuleType

import pytest

from django_jobqueue import conf, enqueue, get_queue, registry
from django_jobqueue.devserver import RedisServer
from django_jobqueue.engine.errortext import (
    MAX_ERROR_CHARS,
    MAX_TRACEBACK_CHARS,
    cap_error,
    cap_traceback,
    format_traceback,
)
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.terminal import safe_json, safe_text
from tests.helpers.commands import command_output
from tests.helpers.paths import PROJECT
from tests.helpers.redis_data import job_hash, listen_to_events
from tests.helpers.workers import drain, run_worker

HUGE = 900_000  # characters of the field a failing handler quotes
# What one errors-log entry or one event may add to its error text (JSON around it).
ENTRY_ROOM = 500


# ------------------------------------------------------------ error caps


def test_capping_keeps_the_start_of_an_error_and_the_end_of_a_traceback():
    error = cap_error("E" * 10_000)
    assert len(error) <= MAX_ERROR_CHARS and error.startswith("EEE")
    assert error.endswith(f"... [cut: {10_000 - error.index('.')} more characters]")
    lines = "".join(f"line {n}\n" for n in range(5000))
    tb = cap_traceback(lines)
    assert len(tb) <= MAX_TRACEBACK_CHARS and tb.endswith("line 4999\n")
    assert tb.startswith("[cut: ") and tb.split("\n")[1].startswith("line ")  # from a line start
    assert cap_error(error) == error and cap_traceback(tb) == tb  # capping twice changes nothing
    assert cap_error("short") == "short" and cap_traceback("short\n") == "short\n"


def test_a_traceback_keeps_its_frames_when_the_message_is_huge():
    def handler():
        raise ValueError("bad field: " + "x" * HUGE)

    try:
        handler()
    except ValueError as exc:
        tb = format_traceback(exc)
    assert len(tb) <= MAX_TRACEBACK_CHARS
    assert tb.startswith("Traceback (most recent call last):")
    assert "in handler" in tb and "ValueError: bad field: xxx" in tb
    assert tb.endswith(" more characters]\n")


def test_a_huge_exception_message_leaves_capped_fields_log_and_events(r):
    events_log = listen_to_events(r, "fast")
    job_id = enqueue("loud_failure", {"size": HUGE})
    drain("fast")

    h = job_hash(r, job_id, "fast")
    assert h["status"] == "failed" and h["attempts"] == "3"
    assert len(h["last_error"]) <= MAX_ERROR_CHARS
    assert h["last_error"].startswith("ValueError: bad field: xxx") and "more characters]" in h["last_error"]
    assert len(h["last_traceback"]) <= MAX_TRACEBACK_CHARS
    assert "in loud_failure" in h["last_traceback"]  # the handler's frame is still there
    errors = json.loads(h["errors"])
    assert len(errors) == 3 and all(len(e["error"]) <= MAX_ERROR_CHARS for e in errors)
    assert len(h["errors"]) <= 3 * (MAX_ERROR_CHARS + ENTRY_ROOM)
    # The whole hash: the payload, and kilobytes of errors (it was 5 MB).
    assert r.memory_usage(f"queue:fast:job:{job_id}") < 100_000

    entries = [data["data"] for _id, data in r.xrange(events_log)]
    events = [json.loads(entry) for entry in entries]
    assert [e["event"] for e in events if "error" in e] == ["retrying", "retrying", "failed"]
    assert all(len(entry) <= MAX_ERROR_CHARS + ENTRY_ROOM for entry in entries)


def test_the_engine_caps_error_text_from_any_caller(r):
    queue = get_queue("jobs")
    events_log = listen_to_events(r, "jobs")

    failed_id = queue.enqueue({}, name="engine_caller")
    claimed = queue.claim_nowait("w")
    assert queue.fail(claimed, "E" * HUGE, traceback="T" * HUGE, terminal=True)
    h = job_hash(r, failed_id, "jobs")
    assert len(h["last_error"]) <= MAX_ERROR_CHARS and len(h["last_traceback"]) <= MAX_TRACEBACK_CHARS
    assert all(len(e["error"]) <= MAX_ERROR_CHARS for e in json.loads(h["errors"]))

    nacked_id = queue.enqueue({}, name="engine_caller")
    claimed = queue.claim_nowait("w")
    queue.requeue(claimed, count_attempt=False, event="nacked", counter="nacks", error="N" * HUGE)
    h = job_hash(r, nacked_id, "jobs")
    assert len(h["last_error"]) <= MAX_ERROR_CHARS
    assert all(len(e["error"]) <= MAX_ERROR_CHARS for e in json.loads(h["errors"]))

    assert all(len(data["data"]) <= MAX_ERROR_CHARS + ENTRY_ROOM for _id, data in r.xrange(events_log))


def test_a_task_failing_with_a_huge_message_keeps_capped_errors(r, settings):
    compat = pytest.importorskip(
        "django_jobqueue.tasks.compat", reason="needs django.tasks (Django 6+) or the django-tasks backport"
    )
    from tests.testapp import tasks

    settings.TASKS = {
        "default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend", "OPTIONS": {"QUEUE_MAP": {"default": "fast"}}}
    }
    result = tasks.failing_loudly.enqueue(HUGE)
    drain("fast")
    result.refresh()
    assert result.status == compat.TaskResultStatus.FAILED and len(result.errors) == 3
    for error in result.errors:
        assert len(error.traceback) <= MAX_TRACEBACK_CHARS
        assert "in failing_loudly" in error.traceback and "ValueError: bad field: xxx" in error.traceback
    fields = job_hash(r, result.id, "fast")
    per_attempt = [value for key, value in fields.items() if key.startswith("task_error:")]
    assert len(per_attempt) == 3
    # JSON adds a backslash per line end: a few hundred characters at most.
    assert all(len(value) <= MAX_TRACEBACK_CHARS + 1000 for value in per_attempt)


# ------------------------------------------------------- terminal output

# Clear the screen, retitle the window, overwrite the line, a C1 CSI, a bidi
# override and isolate, DEL, and a newline that would fake a line of output.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\rfake\x08\x08\x9b31m\u202eevil\u2066\x7f\x00\nsecond line"
HOSTILE_TRACEBACK = "Traceback (most recent call last):\n  \x1b[31mred\x1b[0m\nValueError: \u202eboom"
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def unsafe(text: str, allowed: str = "\n") -> set[str]:
    """The characters of ``text`` that act on a terminal instead of showing."""
    return {c for c in text if c not in allowed and (unicodedata.category(c) == "Cc" or c in BIDI)}


@pytest.fixture
def hostile_job(r) -> str:
    """A failed job whose name, payload, error and traceback carry escape sequences,
    beside a hand-written id of the same kind on the failed list."""
    queue = get_queue("jobs")
    job_id = queue.enqueue({"field": HOSTILE}, name=HOSTILE, max_attempts=1)
    claimed = queue.claim_nowait("w")
    assert queue.fail(claimed, HOSTILE, traceback=HOSTILE_TRACEBACK)
    r.hset(f"queue:jobs:job:{job_id}", mapping={"worker": HOSTILE, HOSTILE: HOSTILE})
    r.lpush("queue:jobs:failed", f"id{HOSTILE}")
    return job_id


def test_safe_text_shows_controls_as_escapes():
    assert safe_text("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert safe_text("\x1b[2J\r\t\n\x9b\u202e\x7f") == "\\x1b[2J\\r\\t\\n\\x9b\\u202e\\x7f"
    assert safe_text("one\n\ttwo\r", multiline=True) == "one\n\ttwo\\r"
    assert unsafe(safe_text(HOSTILE), allowed="") == set()
    assert json.loads(safe_json({"v": HOSTILE})) == {"v": HOSTILE}  # still the same data
    assert unsafe(safe_json({"v": HOSTILE}, indent=2)) == set()


def test_jobq_jobs_list_escapes_stored_text(hostile_job):
    out = command_output("jobq_jobs", "list", "failed")
    assert unsafe(out) == set()
    assert hostile_job in out and "\\x1b[2J" in out and "\\u202eevil" in out
    assert not any(line.startswith("second line") for line in out.splitlines())  # no faked line

    out = command_output("jobq_jobs", "list", "failed", "--json")
    assert unsafe(out) == set()
    assert {row["name"] for row in json.loads(out)["jobs"]} >= {HOSTILE}


def test_jobq_jobs_show_escapes_stored_text_and_keeps_traceback_lines(hostile_job):
    out = command_output("jobq_jobs", "show", hostile_job)
    assert unsafe(out) == set()
    assert not any(line.startswith("second line") for line in out.splitlines())
    assert "\\x1b[2J\\x1b]0;owned\\x07\\rfake" in out
    # A traceback is printed as lines, its controls escaped all the same.
    assert "Traceback (most recent call last):\n  \\x1b[31mred\\x1b[0m\nValueError: \\u202eboom" in out

    out = command_output("jobq_jobs", "show", hostile_job, "--json")
    assert unsafe(out) == set()
    fields = json.loads(out)
    assert fields["last_error"] == HOSTILE and fields["worker"] == HOSTILE and fields[HOSTILE] == HOSTILE


def test_jobq_stats_escapes_worker_records(r):
    now_ms = int(time.time() * 1000)
    r.zadd("queue:workers", {HOSTILE: now_ms})
    r.hset(
        f"queue:worker:{HOSTILE}",
        mapping={
            "host": HOSTILE,
            "pid": "1",
            "queues": json.dumps([HOSTILE]),
            "concurrency": HOSTILE,
            "state": HOSTILE,
        },
    )
    out = command_output("jobq_stats")
    assert unsafe(out) == set()
    assert "worker \\x1b[2J" in out and not any(line.startswith("second line") for line in out.splitlines())
    out = command_output("jobq_stats", "--json")
    assert unsafe(out) == set()
    assert [w["id"] for w in json.loads(out)["workers"]] == [HOSTILE]


def test_the_worker_log_escapes_stored_names(r, redis_server):
    """A job name written into Redis by hand reaches the worker's log lines escaped."""
    queue = get_queue("jobs")
    queue.enqueue({}, name=HOSTILE)
    done = run_worker(redis_server.url, "--burst", "--queue", "jobs")
    assert done.returncode == 0, done.stderr
    assert "dead-lettered" in done.stderr and "\\x1b[2J" in done.stderr
    assert unsafe(done.stderr) == set()
    assert not any(line.startswith("second line") for line in done.stderr.splitlines())


# ------------------------------------------------------------------ demo


def demo_settings(monkeypatch, **env: str) -> dict:
    """The demo project's settings as a fresh process would read them, with ``env``."""
    for name in ("DEMO_DEBUG", "DEMO_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(PROJECT / "testproject" / "settings.py"))


def test_the_demo_runs_without_debug_unless_asked(monkeypatch):
    assert demo_settings(monkeypatch)["DEBUG"] is False
    assert demo_settings(monkeypatch, DEMO_DEBUG="1")["DEBUG"] is True


def test_the_demo_has_a_key_prefix_of_its_own(monkeypatch):
    prefix = demo_settings(monkeypatch)["JOBQUEUE"].get("KEY_PREFIX", conf.DEFAULTS["KEY_PREFIX"])
    assert prefix != conf.DEFAULTS["KEY_PREFIX"]
    assert demo_settings(monkeypatch, DEMO_KEY_PREFIX="elsewhere")["JOBQUEUE"]["KEY_PREFIX"] == "elsewhere"


def test_the_demo_worker_leaves_a_local_projects_jobs_alone(r, monkeypatch, jobq_settings):
    """`make demo` borrows the Redis on :6379, where a local project keeps its own
    `jobs` queue: the demo's worker must not claim (and dead-letter) those jobs."""
    local = RedisJobQueue(get_queue("jobs").client, "jobs")  # the local project's, default prefix
    local_id = local.enqueue({"invoice": 42}, name="bill_customer")
    demo = demo_settings(monkeypatch)["JOBQUEUE"]
    jobq_settings(**{k: v for k, v in demo.items() if k != "REDIS_URL"})

    drain("jobs")
    assert r.hget(f"queue:jobs:job:{local_id}", "status") == "pending"
    assert r.lrange("queue:jobs:pending", 0, -1) == [local_id]


@pytest.fixture
def demo_project(monkeypatch, jobq_settings, settings) -> Iterator[ModuleType]:
    """The demo's URLs and jobs in this process, on its queues (test Redis,
    default prefix), DEBUG off; its modules and job names are forgotten after."""
    monkeypatch.syspath_prepend(str(PROJECT))
    jobq_settings(QUEUES=demo_settings(monkeypatch)["JOBQUEUE"]["QUEUES"])
    settings.ROOT_URLCONF = "testproject.urls"
    settings.STATIC_URL = "/static/"
    settings.DEBUG = False
    before = set(registry.all_definitions())
    jobs = importlib.import_module("demo.jobs")
    try:
        yield jobs
    finally:
        for name in set(registry.all_definitions()) - before:
            registry.unregister(name)
        for name in [m for m in sys.modules if m.split(".")[0] in ("demo", "testproject")]:
            del sys.modules[name]


def test_the_open_state_api_hides_signup_addresses(demo_project, client, monkeypatch):
    monkeypatch.setenv("DEMO_SMTP_FAILURE_RATE", "1")  # the pretend SMTP server always fails
    enqueue("send_welcome_email", {"email": "alice.smith@example.com"})  # what the sign-up view enqueues
    drain("jobs")

    response = client.get("/api/state/")
    assert response.status_code == 200
    text = response.content.decode()
    assert "alice" not in text and "example.com" not in text and "@" not in text  # not whom it was for...
    assert "smtp timeout sending to [e-mail address hidden]" in text  # ...but the failure shows


def test_the_demo_serves_the_admins_static_files_without_debug(demo_project, client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)


def redis_banner(page: str) -> str:
    """The opening tag of the live page's "Redis is unavailable" banner."""
    found = re.search(r'<div id="redis-banner"[^>]*>', page)
    assert found, "the live page has no Redis banner"
    return found.group(0)


def test_the_live_page_says_when_redis_is_down_and_when_it_is_back(demo_project, client, jobq_settings, settings):
    """The page polls /api/state/ and posts to the other JSON views: with its
    Redis stopped they answer 503 with a JSON error (the page's banner), and the
    page itself still loads, banner up; with Redis back, all is as before."""
    # The demo app is not installed here: its templates by path.
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [PROJECT / "demo" / "templates"]}]
    server = RedisServer().start()
    try:
        jobq_settings(REDIS_URL=server.url)
        assert client.get("/api/state/").status_code == 200
        assert "hidden" in redis_banner(client.get("/").content.decode())

        server.stop()
        for response in (
            client.get("/api/state/"),
            client.post("/api/enqueue/", {"kind": "email", "count": "1"}),
            client.post("/api/reclaim/"),
            client.post("/api/rates/"),  # an async view, on redis.asyncio
        ):
            assert response.status_code == 503
            assert response["Content-Type"] == "application/json"
            assert response.json()["error"] == "redis unavailable"
            assert f":{server.port}" in response.json()["detail"]  # which Redis did not answer
        page = client.get("/")
        assert page.status_code == 200
        assert "hidden" not in redis_banner(page.content.decode())

        server.start()  # the same port: the clients' pools reconnect
        assert client.get("/api/state/").status_code == 200
        assert client.post("/api/enqueue/", {"kind": "email", "count": "1"}).json() == {"enqueued": 1}
        assert client.post("/api/rates/").json() == {"enqueued": 20}
        assert "hidden" in redis_banner(client.get("/").content.decode())
    finally:
        server.cleanup()
