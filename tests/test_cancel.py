"""Cancellation (issue 24, point 4): ``cancel(job_id)`` ends a waiting job at
once (it never runs); a running job is told (``job.cancelled``,
``job.raise_if_cancelled()``) and ends ``cancelled``, not failed, never
retried; a handler that ignores it keeps its result, the job reported
cancelled; a job claimed ahead never starts; a finished or unknown job is a
clear error; the signal, the admin's button and ``jobq_jobs cancel``."""

from __future__ import annotations

import json
import threading
import time

import pytest

from django_jobqueue import JobCancelled, JobNotCancellable, JobNotFound, cancel, enqueue, get_queue, job, signals
from django_jobqueue.engine.queue_ops import Cancellation
from django_jobqueue.events import fire
from django_jobqueue.queue import Outcome, RedisJobQueue
from django_jobqueue.worker import Worker
from tests.helpers.schedules import every, step, synced
from tests.helpers.waiting import wait_for
from tests.helpers.workers import drain

RAN: list[str] = []  # ids of the jobs whose handler ran
RELEASE = threading.Event()  # lets the blocking handler return


@job(name="cancel.record", queue="jobs")
def record(payload, job):
    RAN.append(job.id)
    return {"ran": True}


@job(name="cancel.poll", queue="jobs", max_attempts=3)
def poll(payload, job):
    RAN.append(job.id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job.raise_if_cancelled()
        time.sleep(0.01)
    return {"timed out": True}


@job(name="cancel.cooperate", queue="jobs", max_attempts=3)
def cooperate(payload, job):
    RAN.append(job.id)
    deadline = time.monotonic() + 20
    while not job.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    job.raise_if_cancelled()
    return {"timed out": True}


@job(name="cancel.ignore", queue="jobs")
def ignore(payload, job):
    RAN.append(job.id)
    # Waits for the request to be written, then finishes all the same.
    wait_for(lambda: get_queue("jobs").cancel_requested(job.id), what="the cancellation request")
    return {"kept": 42}


@job(name="cancel.block", queue="jobs")
def block(payload, job):
    RAN.append(job.id)
    RELEASE.wait(20)
    return None


@pytest.fixture(autouse=True)
def _fresh():
    RAN.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture
def q(r, clock):
    return RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)


def fields(r, job_id: str, queue: str = "jobs") -> dict[str, str]:
    return r.hgetall(get_queue(queue).keys.job(job_id))


class Running:
    """A worker serving ``jobs`` on a thread, until the test ends."""

    def __init__(self, **options) -> None:
        self.worker = Worker(["jobs"], **options)
        self.thread = threading.Thread(target=self.worker.run, kwargs={"install_signals": False}, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        wait_for(self.worker.cancels.subscribed.is_set, what="the worker's cancellation listener")
        return self.worker

    def __exit__(self, *exc) -> None:
        RELEASE.set()
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


# ------------------------------------------------------------- waiting jobs


def test_a_pending_job_cancelled_never_runs(r):
    keep = enqueue("cancel.record", {}, unique_key="only-one")
    cancelled = enqueue("cancel.record", {}, unique_key="the-other")
    assert cancel(cancelled) is Cancellation.CANCELLED
    f = fields(r, cancelled)
    assert f["status"] == "cancelled" and "cancelled_at_ms" in f
    keys = get_queue("jobs").keys
    assert cancelled not in r.lrange(keys.pending, 0, -1)
    assert r.lrange(keys.completed, 0, -1) == [cancelled]  # the finished history keeps it
    assert r.hget(keys.unique, "the-other") is None  # its unique key is free again
    assert r.hget(keys.stats, "cancelled") == "1"
    assert get_queue("jobs").stats()["cancelled_total"] == 1
    drain("jobs")
    assert RAN == [keep]
    assert fields(r, cancelled)["status"] == "cancelled"


def test_a_delayed_job_cancelled_leaves_the_scheduled_set_and_never_runs(r):
    job_id = enqueue("cancel.record", {}, delay=0.3, ttl=60)
    keys = get_queue("jobs").keys
    assert r.zscore(keys.scheduled, job_id) is not None
    assert cancel(job_id, queue="jobs") is Cancellation.CANCELLED
    assert r.zscore(keys.scheduled, job_id) is None
    assert r.zscore(keys.deadlines, job_id) is None  # nothing left for the sweep to expire
    time.sleep(0.4)  # due by now, had it not been cancelled (not a timing assertion)
    drain("jobs")
    assert RAN == []
    assert fields(r, job_id)["status"] == "cancelled"


def test_a_job_waiting_out_a_retry_backoff_is_cancelled_for_good(q, r):
    job_id = q.enqueue({}, name="cancel.record", max_attempts=5)
    claimed = q.claim("w1")
    assert q.fail_outcome(claimed, "boom", retry_delay_ms=60_000) is Outcome.RETRYING
    assert r.hget(q.keys.job(job_id), "status") == "scheduled"
    assert q.cancel(job_id) is Cancellation.CANCELLED
    assert r.zscore(q.keys.scheduled, job_id) is None
    assert r.hget(q.keys.job(job_id), "status") == "cancelled"
    assert r.hget(q.keys.job(job_id), "last_error") == "boom"  # its history stays


def test_the_cancelled_event_and_signal(q, r):
    r.set(q.keys.events_listening, "1")  # keep the events log, to read the message back
    got = []

    def receiver(sender, **kwargs):
        got.append((sender, kwargs["job_id"], kwargs["status"], kwargs["ran"]))

    signals.job_cancelled.connect(receiver, weak=False)
    try:
        job_id = q.enqueue({}, name="cancel.record")
        q.cancel(job_id)
        messages = [json.loads(f["data"]) for _id, f in r.xrange(q.keys.events_log)]
        message = next(m for m in messages if m["event"] == "cancelled")
        assert (message["id"], message["status"], message["ran"]) == (job_id, "cancelled", False)
        fire(message, "jobs")
    finally:
        signals.job_cancelled.disconnect(receiver)
    assert got == [("jobs", job_id, "cancelled", False)]


# ------------------------------------------------------------ errors


def test_cancelling_a_finished_job_is_a_clear_error(q, r):
    job_id = q.enqueue({}, name="cancel.record")
    q.complete(q.claim("w1"), {"ok": True})
    with pytest.raises(JobNotCancellable) as info:
        q.cancel(job_id)
    assert info.value.status == "completed" and "completed" in str(info.value)
    assert r.hget(q.keys.job(job_id), "status") == "completed"  # nothing changed
    job_id = enqueue("cancel.record", {})
    cancel(job_id)
    with pytest.raises(JobNotCancellable, match="cancelled"):
        cancel(job_id)


def test_cancelling_an_unknown_job_is_a_clear_error(q):
    with pytest.raises(JobNotFound):
        q.cancel("0" * 36)
    with pytest.raises(JobNotFound, match="any configured queue"):
        cancel("0" * 36)


def test_cancel_checks_its_key_types_before_changing_anything(q, r):
    job_id = q.enqueue({}, name="cancel.record")
    r.delete(q.keys.completed)
    r.set(q.keys.completed, "not a list")
    with pytest.raises(Exception, match="WRONGTYPE"):
        q.cancel(job_id)
    assert r.hget(q.keys.job(job_id), "status") == "pending"
    assert r.lrange(q.keys.pending, 0, -1) == [job_id]


# -------------------------------------------------------------- claimed jobs


def test_a_claimed_job_is_only_asked_and_its_worker_ends_it(q, r):
    job_id = q.enqueue({}, name="cancel.record")
    claimed = q.claim("w1")
    assert q.cancel(job_id) is Cancellation.REQUESTED
    assert q.cancel(job_id) is Cancellation.REQUESTED  # asked again: nothing more
    f = r.hgetall(q.keys.job(job_id))
    assert f["status"] == "processing" and "cancel_requested_ms" in f
    assert q.cancel_requested(job_id)
    assert q.end_cancelled(claimed, ran=True) is Outcome.OK
    f = r.hgetall(q.keys.job(job_id))
    assert (f["status"], f["attempts"], f["claim_token"]) == ("cancelled", "1", "")
    assert r.lrange(q.keys.processing, 0, -1) == [] and r.zcard(q.keys.leases) == 0
    assert r.lrange(q.keys.completed, 0, -1) == [job_id]
    assert r.hget(q.keys.stats, "cancelled") == "1" and r.hget(q.keys.stats, "completed") is None


def test_a_job_claimed_ahead_and_cancelled_is_not_started(q, r):
    first = q.enqueue({}, name="cancel.record")
    ahead = q.enqueue({}, name="cancel.record")
    jobs = q.claim_many(2, "w1", start=1)
    assert [j.id for j in jobs] == [first, ahead]
    q.cancel(ahead)
    assert q.start([jobs[1]]) == [Outcome.CANCELLED]
    assert q.end_cancelled(jobs[1], ran=False) is Outcome.OK
    f = r.hgetall(q.keys.job(ahead))
    assert (f["status"], f["attempts"]) == ("cancelled", "0")  # never ran: no attempt used


def test_a_running_job_that_finishes_anyway_keeps_its_result_and_is_reported_cancelled(r):
    job_id = enqueue("cancel.ignore", {})
    with Running(concurrency=1):
        wait_for(lambda: RAN == [job_id], what="the handler to start")
        assert cancel(job_id) is Cancellation.REQUESTED
        wait_for(lambda: fields(r, job_id).get("status") == "cancelled", what="the job to end")
    f = fields(r, job_id)
    assert json.loads(f["result"]) == {"kept": 42}
    assert f["attempts"] == "1"
    assert r.hget(get_queue("jobs").keys.stats, "cancelled") == "1"


@pytest.mark.parametrize("name", ["cancel.poll", "cancel.cooperate"])
def test_a_running_handler_that_checks_stops_and_the_job_ends_cancelled_not_failed(r, name):
    job_id = enqueue(name, {})
    with Running(concurrency=1) as worker:
        wait_for(lambda: RAN == [job_id], what="the handler to start")
        assert cancel(job_id) is Cancellation.REQUESTED
        # About a second at most (the handler asks every 10 ms; the nudge tells it at once).
        wait_for(lambda: fields(r, job_id).get("status") == "cancelled", timeout=5, what="the job to end")
        wait_for(lambda: worker.stats.processed == 1, what="the runner to be done")
    f = fields(r, job_id)
    assert f["attempts"] == "1" and "result" not in f and "last_error" not in f
    stats = r.hgetall(get_queue("jobs").keys.stats)
    assert stats.get("cancelled") == "1" and "retried" not in stats and "failed" not in stats
    assert RAN == [job_id]  # never run again


def test_job_cancelled_is_looked_up_when_asked_without_the_nudge(q, r):
    from django_jobqueue.worker import job as job_module

    job_id = q.enqueue({}, name="cancel.record")
    handler_job = job_module.Job(q, q.claim("w1"))
    assert handler_job.cancelled is False
    q.cancel(job_id)  # nobody listens: the handler must find it itself
    handler_job._cancel_checked -= job_module.CANCEL_CHECK_S  # its next look is due
    assert handler_job.cancelled is True
    with pytest.raises(JobCancelled):
        handler_job.raise_if_cancelled()


def test_a_job_claimed_ahead_by_a_worker_and_cancelled_never_runs(r):
    blocking = enqueue("cancel.block", {})
    ahead = enqueue("cancel.record", {})
    with Running(concurrency=1):
        wait_for(lambda: RAN == [blocking], what="the first job to run")
        # The second waits in the worker, claimed ahead for the busy runner.
        wait_for(lambda: fields(r, ahead).get("status") == "processing", what="the job claimed ahead")
        assert cancel(ahead) is Cancellation.REQUESTED
        wait_for(lambda: fields(r, ahead).get("status") == "cancelled", what="the job claimed ahead to end")
        RELEASE.set()
        wait_for(lambda: fields(r, blocking).get("status") == "completed", what="the first job to finish")
    assert RAN == [blocking]
    assert fields(r, ahead)["attempts"] == "0"


def test_a_cancel_requested_job_handed_back_is_ended_by_the_next_claim_without_running(q, r):
    job_id = q.enqueue({}, name="cancel.record")
    claimed = q.claim("w1")
    q.cancel(job_id)
    # Its worker shuts down and hands it back before hearing of it.
    q.requeue(claimed, count_attempt=False, front=True, event="released", counter="releases")
    assert r.hget(q.keys.job(job_id), "status") == "pending"
    drain("jobs")
    assert RAN == []
    assert r.hget(q.keys.job(job_id), "status") == "cancelled"


def test_a_cancelled_job_replayed_runs_again(q, r):
    job_id = enqueue("cancel.record", {})
    cancel(job_id)
    assert get_queue("jobs").retry(job_id) is Outcome.OK
    assert "cancel_requested_ms" not in fields(r, job_id)
    drain("jobs")
    assert RAN == [job_id]
    assert fields(r, job_id)["status"] == "completed"


# ------------------------------------------------------- admin and command


@pytest.mark.django_db
def test_the_admin_job_page_cancels_with_a_post_and_csrf_for_managers_only(r, django_user_model, viewer):
    from tests.helpers.admin import body, logged_in, make_user, url

    job_id = enqueue("cancel.record", {})
    page = url("job", "jobs", job_id)
    manager = logged_in(make_user(django_user_model, "canceller", perms=("manage_jobs",)), enforce_csrf_checks=True)
    shown = body(manager.get(page))
    assert 'name="action" value="cancel"' in shown and ">Cancel</button>" in shown
    assert 'value="cancel"' not in body(viewer.get(page))  # a viewer sees no button
    data = {"action": "cancel", "ids": [job_id], "back": "job"}
    assert viewer.post(url("action", "jobs"), data).status_code == 403
    assert manager.post(url("action", "jobs"), data).status_code == 403  # no CSRF token
    assert fields(r, job_id)["status"] == "pending"
    token = manager.cookies["csrftoken"].value
    response = manager.post(url("action", "jobs"), {**data, "csrfmiddlewaretoken": token}, follow=True)
    assert response.status_code == 200
    assert fields(r, job_id)["status"] == "cancelled"
    assert "Cancelled 1 job(s) of jobs" in body(response)
    assert 'value="cancel"' not in body(manager.get(page))  # finished: nothing left to cancel


def test_jobq_jobs_cancel(r):
    from django.core.management.base import CommandError

    from tests.helpers.commands import command_output

    waiting = enqueue("cancel.record", {})
    claimed = enqueue("cancel.record", {}, queue="high")
    get_queue("high").claim("w1")
    assert command_output("jobq_jobs", "cancel", waiting) == f"{waiting}: cancelled\n"  # found in any queue
    out = command_output("jobq_jobs", "--queue", "high", "cancel", claimed)
    assert "cancellation asked" in out
    assert fields(r, waiting)["status"] == "cancelled"
    assert "cancel_requested_ms" in fields(r, claimed, "high")
    with pytest.raises(CommandError, match="left as they were"):
        command_output("jobq_jobs", "cancel", waiting, "0" * 36)


# ------------------------------------------- a nudge missed (review 3, R1)


def cancel_while_listeners_are_cut_off(r, job_id: str) -> list:
    """Cancel a claimed job in one transaction with the killing of every
    pub/sub connection: no worker's listener can hear the message."""
    from django_jobqueue.engine import scripts

    q = get_queue("jobs")
    script = scripts.get("cancel")
    keys = script.keys_for(q.keys, job=q.keys.job(job_id))
    args = script.argv_for(now=0, id=job_id, completed_ttl=q.completed_ttl_s, history=q.history)
    pipe = r.pipeline(transaction=True)
    pipe.client_kill_filter(_type="pubsub")
    pipe.eval(script.source, len(keys), *keys, *args)
    return pipe.execute()


def test_a_job_claimed_ahead_whose_nudge_is_lost_is_dropped_when_the_listener_subscribes_again(r):
    blocking = enqueue("cancel.block", {})
    ahead = enqueue("cancel.record", {})
    with Running(concurrency=1):
        wait_for(lambda: RAN == [blocking], what="the first job to run")
        wait_for(lambda: fields(r, ahead).get("status") == "processing", what="the job claimed ahead")
        killed, code = cancel_while_listeners_are_cut_off(r, ahead)
        assert killed >= 1 and code == 2  # the message was published to nobody
        # The listener subscribes again, looks the held jobs up, and drops it
        # (the blocking job still holds the only runner).
        wait_for(lambda: fields(r, ahead).get("status") == "cancelled", what="the job claimed ahead to end")
        RELEASE.set()
        wait_for(lambda: fields(r, blocking).get("status") == "completed", what="the first job to finish")
    assert RAN == [blocking]
    assert fields(r, ahead)["attempts"] == "0"


def test_a_nudge_heard_before_the_claim_is_registered_is_kept_for_it(r):
    # The claim script ran, then cancel() published before the worker had
    # registered the job: the listener heard of a job it did not hold yet.
    worker = Worker(["jobs"], concurrency=1)
    queue = get_queue("jobs")
    job_id = enqueue("cancel.record", {})
    (claimed,) = queue.claim_many(1, worker.worker_id, start=0)  # claimed ahead
    assert queue.cancel(job_id) is Cancellation.REQUESTED
    worker.cancels.heard(job_id)
    worker._fetcher._on_claimed(queue, [claimed])  # the claim's reply is registered now
    assert worker._run_job(queue, claimed) == "cancelled"
    assert RAN == []
    f = fields(r, job_id)
    assert (f["status"], f["attempts"]) == ("cancelled", "0")


def test_cancelling_a_claimed_job_again_publishes_again(q, r):
    job_id = q.enqueue({}, name="cancel.record")
    q.claim("w1")
    pubsub = r.pubsub()
    pubsub.subscribe(q.keys.cancels)
    try:
        wait_for(lambda: (m := pubsub.get_message(timeout=0.1)) is not None and m["type"] == "subscribe")
        assert q.cancel(job_id) is Cancellation.REQUESTED
        assert q.cancel(job_id) is Cancellation.REQUESTED  # its first message may have been lost
        heard: list[str] = []

        def two_heard() -> bool:
            m = pubsub.get_message(timeout=0.1)
            if m is not None and m["type"] == "message":
                heard.append(m["data"])
            return len(heard) == 2

        wait_for(two_heard, timeout=5, what="two messages")
        assert heard == [job_id, job_id]
    finally:
        pubsub.close()
    # Nothing else changed: one request, one event.
    assert r.hget(q.keys.stats, "cancelled") is None


def test_purging_the_completed_list_deletes_the_cancelled_jobs_too(q, r):
    from django_jobqueue.engine import bulk

    done = q.enqueue({}, name="cancel.record")
    q.complete(q.claim("w1"), {"ok": 1})
    gone = q.enqueue({}, name="cancel.record")
    q.cancel(gone)
    assert r.lrange(q.keys.completed, 0, -1) == [gone, done]
    result = bulk.purge(q, "completed")
    assert result.done == 2
    assert r.exists(q.keys.job(done), q.keys.job(gone)) == 0  # no hash left that no list leads to


@job(name="cancel.stop_after_an_outage", queue="jobs")
def stop_after_an_outage(payload, job):
    RAN.append(job.id)
    raise JobCancelled("stop")


def test_ending_a_cancelled_run_is_tried_again_through_a_short_outage(r, monkeypatch):
    import redis

    end = RedisJobQueue.end_cancelled
    failures: list[str] = []

    def first_fails(self, claimed, *, ran):
        if not failures:
            failures.append(claimed.id)
            raise redis.exceptions.ConnectionError("connection lost (test)")
        return end(self, claimed, ran=ran)

    monkeypatch.setattr(RedisJobQueue, "end_cancelled", first_fails)
    job_id = enqueue("cancel.stop_after_an_outage", {})
    drain("jobs")
    assert failures == [job_id]
    f = fields(r, job_id)
    assert (f["status"], f["attempts"]) == ("cancelled", "1")
    assert RAN == [job_id]


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_a_schedule_whose_last_run_was_cancelled_runs_again(r, clock, overlap):
    # A cancelled run is finished: the schedule's overlap policy must not
    # wait for it (for as long as its hash is kept).
    s = every(1, overlap=overlap)
    q, store = synced(r, clock, s)
    clock.advance(1)
    (first,) = step(store, s)
    assert q.cancel(first) is Cancellation.CANCELLED
    clock.advance(1)
    (second,) = step(store, s)
    assert second != first
