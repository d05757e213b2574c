"""A handler's progress (issue 24, point 5): ``job.progress(0.42, message=...)``
is kept on the job and published as a ``progress`` event, a few writes a
second at most whatever the handler's loop, the last report never lost; only
the current claim may write it; bad values are the handler's error; code, the
admin's job page and ``jobq_jobs show`` read it back."""

from __future__ import annotations

import json
import logging
import math
import re
import time

import pytest
import redis

from django_jobqueue import enqueue, get_queue, job
from django_jobqueue.engine.progress import (
    ERROR_PAUSE_S,
    MAX_PROGRESS_MESSAGE_CHARS,
    WRITE_INTERVAL_S,
    ProgressReporter,
)
from django_jobqueue.queue import Outcome, Progress, RedisJobQueue
from django_jobqueue.worker.job import Job
from tests.helpers.admin import HOSTILE, body, url
from tests.helpers.commands import command_output
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain

LOOP = 10_000


@job(name="progress.loop", queue="jobs")
def progress_loop(payload, job):
    started = time.monotonic()
    for i in range(LOOP):
        job.progress((i + 1) / LOOP, message=f"row {i + 1} of {LOOP}")
    return {"seconds": time.monotonic() - started}


@pytest.fixture
def q(r, clock):
    return RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)


class StepClock:
    """A monotonic clock the test moves by hand, for the reporter's interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_events(r, queue: RedisJobQueue) -> list[dict]:
    entries = r.xrange(queue.keys.events_log)
    messages = [json.loads(fields["data"]) for _id, fields in entries]
    return [m for m in messages if m["event"] == "progress"]


# ----------------------------------------------------------------- engine


def test_a_report_is_kept_on_the_job_published_and_read_back(q, r, clock):
    job_id = q.enqueue({"n": 1}, name="export")
    claimed = q.claim_nowait("w1")
    assert q.progress(job_id) is None, "nothing reported yet"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(q.keys.events)

    assert q.report_progress(claimed, 0.42, "page 42 of 100") is Outcome.OK

    fields = r.hgetall(q.keys.job(job_id))
    assert (fields["progress"], fields["progress_message"]) == ("0.42", "page 42 of 100")
    assert fields["progress_at_ms"] == str(int(clock())) and fields["progress_attempt"] == "1"
    assert q.progress(job_id) == Progress(0.42, "page 42 of 100", int(clock()), 1)
    assert q.progress(job_id).percent == 42
    assert q.progress("0" * 36) is None, "no such job"

    event = json.loads(wait_for(lambda: pubsub.get_message(timeout=0.1), what="the event")["data"])
    assert (event["event"], event["id"], event["status"], event["name"]) == ("progress", job_id, "processing", "export")
    assert (event["progress"], event["message"], event["attempts"]) == (0.42, "page 42 of 100", 1)
    pubsub.close()


def test_the_progress_stays_on_the_job_after_it_ends(q):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    q.report_progress(claimed, 1, None)
    q.complete(claimed, {"ok": True})
    assert q.progress(job_id) == Progress(1.0, "", q.progress(job_id).updated_at_ms, 1)


def test_a_stale_claim_changes_nothing(q, r):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    q.report_progress(claimed, 0.1, "first")
    before = r.hgetall(q.keys.job(job_id))
    r.xtrim(q.keys.events_log, 0)
    r.set(q.keys.events_listening, "1")

    q.requeue_now(job_id)  # the claim is revoked; the job waits to run again
    assert q.report_progress(claimed, 0.9, "stale") is Outcome.NOT_OWNER
    again = q.claim_nowait("w2")
    assert q.report_progress(claimed, 0.9, "stale") is Outcome.NOT_OWNER, "another claim's job"
    q.complete(again)
    assert q.report_progress(again, 0.9, "stale") is Outcome.NOT_OWNER, "a finished job"

    after = r.hgetall(q.keys.job(job_id))
    assert {k: after[k] for k in before if k.startswith("progress")} == {
        k: v for k, v in before.items() if k.startswith("progress")
    }
    assert progress_events(r, q) == []
    q.delete(job_id)
    assert q.report_progress(again, 0.9, "gone") is Outcome.MISSING


@pytest.mark.parametrize(
    ("fraction", "error"),
    [
        (math.nan, ValueError),
        (-0.01, ValueError),
        (1.01, ValueError),
        (math.inf, ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_fraction_is_a_clear_error_and_writes_nothing(q, r, fraction, error):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    with pytest.raises(error, match="progress: the fraction must be"):
        q.report_progress(claimed, fraction)
    handler_job = Job(q, claimed)
    with pytest.raises(error, match="progress: the fraction must be"):
        handler_job.progress(fraction)
    handler_job.end_progress()
    assert "progress" not in r.hgetall(q.keys.job(job_id))


def test_the_script_refuses_a_fraction_out_of_range_itself(q, r):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    from django_jobqueue.engine import scripts

    script = scripts.get("progress")
    for bad in ("nan", "2", "-1", "half"):
        args = script.argv_for(now=0, id=job_id, claim_token=claimed.claim_token, fraction=bad, message="")
        with pytest.raises(redis.ResponseError, match="progress: the fraction"):
            script(r, script.keys_for(q.keys, job=q.keys.job(job_id)), args)
    assert "progress" not in r.hgetall(q.keys.job(job_id))


def test_a_message_is_text_cut_to_its_cap(q, r):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    with pytest.raises(TypeError, match="the message must be text"):
        q.report_progress(claimed, 0.5, 42)
    q.report_progress(claimed, 0.5, "x" * 100_000)
    stored = r.hget(q.keys.job(job_id), "progress_message")
    assert len(stored) <= MAX_PROGRESS_MESSAGE_CHARS and stored.startswith("x" * 100) and "[cut: " in stored


def test_the_progress_event_reaches_job_event_receivers_only(q, r):
    from django_jobqueue import events
    from django_jobqueue.signals import EVENT_SIGNALS, job_event

    q.enqueue({}, name="export")
    r.set(q.keys.events_listening, "1")
    q.report_progress(q.claim_nowait("w1"), 0.25, "a quarter")
    (message,) = progress_events(r, q)
    heard = []

    def receiver(sender, **kwargs):
        heard.append((sender, kwargs["event"]["event"], kwargs["event"]["progress"], kwargs["event"]["message"]))

    job_event.connect(receiver)
    try:
        assert events.fire(message, "jobs") == 1, "job_event only: progress has no signal of its own"
    finally:
        job_event.disconnect(receiver)
    assert heard == [("jobs", "progress", 0.25, "a quarter")] and "progress" not in EVENT_SIGNALS


# ----------------------------------------------------------------- worker


def test_reports_within_the_interval_are_kept_and_the_last_one_written_at_the_end(q, r):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    r.set(q.keys.events_listening, "1")
    clock = StepClock()
    reporter = ProgressReporter(q, claimed, lambda: None, clock=clock)

    reporter.report(0.1, "a")  # written: the first
    reporter.report(0.2, "b")  # kept
    clock.now += WRITE_INTERVAL_S / 2
    reporter.report(0.3, "c")  # kept
    assert reporter.writes == 1 and q.progress(job_id).message == "a"
    clock.now += WRITE_INTERVAL_S / 2
    reporter.report(0.4, "d")  # the interval has passed: written
    reporter.report(0.5, "e")  # kept
    assert reporter.writes == 2 and q.progress(job_id).message == "d"
    reporter.end()  # the run ends: the last report is written
    assert reporter.writes == 3 and q.progress(job_id).message == "e"
    reporter.report(0.6, "late")  # after the end: ignored
    clock.now += 10
    reporter.report(0.7, "later")
    reporter.end()
    assert reporter.writes == 3 and q.progress(job_id).message == "e"
    assert [(e["progress"], e["message"]) for e in progress_events(r, q)] == [(0.1, "a"), (0.4, "d"), (0.5, "e")]


def test_a_report_after_the_run_ended_writes_nothing(q):
    job_id = q.enqueue({}, name="export")
    handler_job = Job(q, q.claim_nowait("w1"))
    handler_job.end_progress()  # the handler returned
    handler_job.progress(0.5, "from a thread the handler left running")
    assert q.progress(job_id) is None
    with pytest.raises(ValueError, match="progress: the fraction"):
        handler_job.progress(2)


def test_a_report_refused_for_a_lost_claim_marks_the_run_lost_and_writes_no_more(q):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    handler_job = Job(q, claimed)
    q.requeue_now(job_id)
    handler_job.progress(0.5, "too late")
    assert handler_job.lost_claim
    assert q.progress(job_id) is None


def test_a_redis_error_is_logged_once_never_raised_and_the_value_written_later(q, r, redis_server, caplog):
    job_id = q.enqueue({}, name="export")
    claimed = q.claim_nowait("w1")
    # The same queue, through a client whose Redis is not there.
    down = redis.Redis(port=1, socket_connect_timeout=0.5)
    gone = RedisJobQueue(down, "jobs", visibility_ms=5000, clock=q.clock)
    clock = StepClock()
    reporter = ProgressReporter(gone, claimed, lambda: None, clock=clock)
    with caplog.at_level(logging.WARNING, logger="django_jobqueue"):
        reporter.report(0.3, "while Redis is away")
        clock.now += WRITE_INTERVAL_S
        reporter.report(0.4, "still away")  # within the pause after an error: not tried
    assert reporter.writes == 0
    warnings = [rec.getMessage() for rec in caplog.records if "progress not recorded" in rec.getMessage()]
    assert len(warnings) == 1 and job_id in warnings[0] and "the job goes on" in warnings[0]

    reporter._queue = q  # Redis is back (the same queue, through a client that reaches it)
    clock.now += ERROR_PAUSE_S
    reporter.report(0.5, "back")
    assert reporter.writes == 1 and q.progress(job_id).message == "back"
    down.close()


def test_a_worker_running_a_tight_loop_writes_a_few_times_a_second_and_keeps_the_last(r):
    q = get_queue("jobs")
    r.set(q.keys.events_listening, "1")  # so the scripts log every event: counted below
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(q.keys.events)
    job_id = enqueue("progress.loop", {})

    drain("jobs")

    fields = r.hgetall(q.keys.job(job_id))
    assert fields["status"] == "completed"
    assert (fields["progress"], fields["progress_message"]) == ("1.0", f"row {LOOP} of {LOOP}")
    seconds = json.loads(fields["result"])["seconds"]
    events = progress_events(r, q)
    # One write per interval the loop lasted, the first at once, and the last report at the end.
    assert 1 <= len(events) <= 2 + seconds / WRITE_INTERVAL_S, (len(events), seconds)
    assert (events[-1]["progress"], events[-1]["message"]) == (1.0, f"row {LOOP} of {LOOP}")
    published = []

    def all_published() -> bool:
        while (message := pubsub.get_message(timeout=0.01)) is not None:
            published.append(json.loads(message["data"]))
        return any(e["event"] == "completed" for e in published)

    wait_for(all_published, what="the completed event")
    published_progress = [{k: v for k, v in e.items() if k != "log_id"} for e in published if e["event"] == "progress"]
    assert published_progress == events, "every write is also published"
    pubsub.close()


# ----------------------------------------------------------------- reading


def running_job_with_progress(message: str) -> tuple[RedisJobQueue, str]:
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 2})
    claimed = q.claim_nowait("w1")
    assert q.report_progress(claimed, 0.42, message) is Outcome.OK
    return q, job_id


def test_the_admin_job_page_shows_the_bar_and_the_message_escaped(viewer):
    hostile = " ".join(HOSTILE)
    _q, job_id = running_job_with_progress(hostile)

    page = body(viewer.get(url("job", "jobs", job_id)))
    assert '<progress max="1" value="0.4200">42%</progress> 42%' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    for text in HOSTILE[:2]:
        assert text not in page
    assert re.search(r"updated [0-9]+ s ago", page)
    assert "progress_message" not in page, "shown in its place, not among the other fields"

    live = viewer.get(url("job_json", "jobs", job_id)).json()["parts"]["status"]
    assert '<progress max="1" value="0.4200">' in live and "&lt;script&gt;" in live and HOSTILE[0] not in live


def test_a_job_that_reported_nothing_shows_no_bar(viewer):
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert "<progress" not in body(viewer.get(url("job", "jobs", job_id)))


def test_jobq_jobs_show_prints_the_progress(r):
    _q, job_id = running_job_with_progress("page 42 of 100\x1b[2J")
    out = command_output("jobq_jobs", "--queue", "jobs", "show", job_id)
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in out.splitlines() if " " in line.strip()}
    assert lines["progress"] == "0.42 (42%)"
    assert lines["progress_message"].startswith("page 42 of 100") and "\x1b" not in out


@job(name="progress.then_cancelled", queue="jobs")
def progress_then_cancelled(payload, job):
    from django_jobqueue import JobCancelled

    job.progress(0.2, message="first")
    job.progress(0.5, message="second")  # within WRITE_INTERVAL_S of the first: kept, written at the end
    raise JobCancelled("stop")


def test_the_report_kept_is_written_when_the_handler_raises_job_cancelled(r):
    job_id = enqueue("progress.then_cancelled", {})
    drain("jobs")
    queue = get_queue("jobs")
    assert r.hget(queue.keys.job(job_id), "status") == "cancelled"
    progress = queue.progress(job_id)
    assert progress is not None and (progress.fraction, progress.message) == (0.5, "second")
