"""The model-free admin: what it shows, what it changes, and who may do either."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from django.test import Client

from django_jobqueue import QueuePaused, enqueue, get_queue
from django_jobqueue.engine import browse
from django_jobqueue.engine.keys import QueueKeys
from tests.helpers.admin import HOSTILE, OVERVIEW, body, logged_in, make_user, url
from tests.helpers.redis_data import job_status, register_worker

pytestmark = pytest.mark.django_db

SECRET_TOKEN = "0123456789abcdef-secret-claim-token"  # noqa: S105 - a fake, to prove it is never shown


# ------------------------------------------------------------------- jobs


@pytest.fixture
def jobs(r):
    """One job in every state of queue "jobs", and a worker running one of them."""
    q = get_queue("jobs")
    out = {}
    out["completed"] = enqueue("add", {"a": 1, "b": 2})
    q.complete(q.claim_nowait("w1"), {"sum": 3, "nested": {"list": [1, 2]}})
    out["failed"] = enqueue("boom", {"message": "smtp"})
    q.fail(
        q.claim_nowait("w1"),
        "RuntimeError: smtp",
        traceback="Traceback (most recent call last):\n  boom",
        terminal=True,
    )
    out["processing"] = enqueue("sleepy", {"seconds": 1})
    running = q.claim_nowait("w1")
    out["token"] = running.claim_token
    out["pending"] = [enqueue("add", {"a": n, "b": 0}) for n in range(2)]
    out["scheduled"] = enqueue("add", {"a": 9, "b": 9}, delay=600)
    register_worker(r, "w1", [["jobs", out["processing"], running.claim_token]])
    return out


def snapshot(r) -> dict:
    """Every key's serialized value, except the throughput samples the admin
    keeps (the one thing a GET may write: telemetry, not state)."""
    return {k: r.dump(k) for k in sorted(r.keys("*")) if not k.endswith(":stats:samples")}


# ------------------------------------------------------------------ pages


def test_the_admin_index_lists_the_queues(viewer, staff_without_permission):
    assert OVERVIEW in body(viewer.get("/admin/"))
    assert OVERVIEW not in body(staff_without_permission.get("/admin/"))


def test_overview_shows_depths_counters_age_and_workers_never_a_token(viewer, jobs):
    page = body(viewer.get(OVERVIEW))
    stats = get_queue("jobs").stats()
    for which in browse.LISTS:
        assert f'href="{url("list", "jobs", which)}" data-depth="{which}">{stats[f"{which}_depth"]}<' in page
    assert (stats["pending_depth"], stats["scheduled_depth"], stats["failed_depth"]) == (2, 1, 1)
    assert "Oldest pending" in page and "Counters" in page and ">enqueued<" in page
    for queue in ("jobs", "high", "low", "fast"):
        assert url("list", queue, "pending") in page
    # The worker, its host, and a link to the job it runs; never its claim token.
    assert "box-1" in page and "4242" in page and url("job", "jobs", jobs["processing"]) in page
    assert jobs["token"] not in page
    assert "Run a reclaim sweep" not in page  # a viewer sees no action


def test_overview_refresh_returns_the_live_parts_rendered(viewer, jobs):
    data = viewer.get(url("overview_json")).json()
    assert set(data["parts"]) == {"queues", "flow", "charts", "workers"}
    assert "box-1" in data["parts"]["workers"] and jobs["token"] not in json.dumps(data)
    assert url("list", "jobs", "failed") in data["parts"]["queues"]


def test_throughput_comes_from_samples_of_the_shared_counters(r, viewer):
    keys = QueueKeys("queue", "jobs")
    seconds, micros = r.time()
    now = seconds * 1000 + micros // 1000
    # A sample taken 2 minutes ago, when 100 jobs had completed; 160 now.
    r.lpush(keys.stats_samples, json.dumps({"ts": now - 120_000, "enqueued": 0, "completed": 100, "failed": 4}))
    r.hset(keys.stats, mapping={"completed": 160, "failed": 4, "enqueued": 200})
    part = viewer.get(url("overview_json")).json()["parts"]["queues"]
    assert '<span title="over 120 s">30.0</span>' in part  # (160 - 100) / 2 minutes
    samples = r.lrange(keys.stats_samples, 0, -1)
    assert len(samples) == 2 and json.loads(samples[0])["completed"] == 160  # sampled now
    viewer.get(url("overview_json"))
    assert r.llen(keys.stats_samples) == 2  # at most one sample per SAMPLE_EVERY_MS


def test_throughput_windows_and_counter_resets():
    now = 1_000_000_000
    samples = [
        {"ts": now - 30_000, "completed": 90, "failed": 0, "enqueued": 0},
        {"ts": now - 70_000, "completed": 40, "failed": 0, "enqueued": 0},
    ]
    one, five, fifteen = browse.throughput(samples, {"completed": 110, "failed": 0, "enqueued": 0}, now)
    assert (one["seconds"], one["completed"]) == (70, round(70 * 60 / 70, 1))
    assert five["seconds"] == 70  # the longest span there is, and it says so
    assert browse.throughput(samples, {"completed": 5}, now)[0]["seconds"] is None  # counters were reset
    assert browse.throughput([], {}, now)[0]["seconds"] is None


def test_lists_are_paginated_next_to_run_first(viewer):
    ids = get_queue("jobs").enqueue_many([{"n": n} for n in range(60)], name="add")
    first = body(viewer.get(url("list", "jobs", "pending")))
    assert "Page 1 of 3" in first and "60 job(s), 1–25 shown" in first
    assert first.index(ids[0]) < first.index(ids[24]) and ids[25] not in first
    last = body(viewer.get(url("list", "jobs", "pending") + "?page=3"))
    assert "Page 3 of 3" in last and ids[59] in last and ids[49] not in last and "51–60 shown" in last
    assert "Page 2 of 2" in body(viewer.get(url("list", "jobs", "pending") + "?page=99&per_page=50"))
    assert "Page 1 of 3" in body(viewer.get(url("list", "jobs", "pending") + "?page=x&per_page=7"))


def test_scheduled_list_shows_due_times_soonest_first(viewer):
    late = enqueue("add", {"a": 1, "b": 1}, delay=3600)
    soon = enqueue("add", {"a": 1, "b": 1}, delay=60)
    page = body(viewer.get(url("list", "jobs", "scheduled")))
    assert page.index(soon) < page.index(late) and "Due" in page


def test_empty_and_unknown_lists(viewer):
    assert "This list is empty." in body(viewer.get(url("list", "jobs", "failed")))
    assert viewer.get(url("list", "jobs", "claiming")).status_code == 404
    assert viewer.get(url("list", "nope", "pending")).status_code == 404


class Monitor:
    """Records every command the Redis server runs (MONITOR) until stopped."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(port=port, decode_responses=True)
        self.commands: list[str] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for entry in monitor.listen():
                if "jq-monitor-end" in entry["command"]:
                    return
                self.commands.append(entry["command"])

    def stop(self, r) -> list[str]:
        r.echo("jq-monitor-end")
        self.thread.join(10)
        self.client.close()
        return self.commands


def test_pages_of_a_million_jobs_read_only_the_page(r, redis_server, viewer):
    key = QueueKeys("queue", "jobs").pending
    pipe = r.pipeline(transaction=False)
    for start in range(0, 1_000_000, 10_000):
        pipe.lpush(key, *(f"{n:036x}" for n in range(start, start + 10_000)))
    pipe.execute()
    assert r.llen(key) == 1_000_000

    r.config_resetstat()
    out_before = r.info("stats")["total_net_output_bytes"]
    monitor = Monitor(redis_server.port)
    pages = ["1", "20000", "40000"]
    for number in pages:
        response = viewer.get(url("list", "jobs", "pending") + f"?page={number}")
        assert response.status_code == 200
        assert f"Page {number} of 40000" in body(response)
    commands = monitor.stop(r)
    sent = r.info("stats")["total_net_output_bytes"] - out_before

    ranges = [c.split() for c in commands if c.startswith("LRANGE")]
    assert len(ranges) == len(pages)
    for _cmd, _key, start, stop in ranges:
        assert int(stop) - int(start) + 1 == 25  # one page, never "0 -1"
    calls = sum(s["calls"] for s in r.info("commandstats").values())
    assert calls < 100 * len(pages)
    # The whole list is ~38 MB on the wire; three pages are a few KB.
    assert sent < 1_000_000


def test_search_finds_a_job_by_id(viewer, jobs):
    response = viewer.get(url("search") + f"?q={jobs['failed']}")
    assert response.status_code == 302 and response["Location"] == url("job", "jobs", jobs["failed"])
    scoped = viewer.get(url("search") + f"?q={jobs['failed']}&queue=high")
    assert scoped.status_code == 200 and "No job with ID" in body(scoped) and "in queue high" in body(scoped)
    hostile = body(viewer.get(url("search"), {"q": HOSTILE[0]}))
    assert HOSTILE[0] not in hostile and "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    assert viewer.get(url("search") + "?q=x&queue=nope").status_code == 404


def test_job_detail_pretty_prints_and_shows_the_history(viewer, jobs):
    done = body(viewer.get(url("job", "jobs", jobs["completed"])))
    assert "Payload" in done and "Result" in done
    assert "{\n  &quot;sum&quot;: 3,\n  &quot;nested&quot;: {\n    &quot;list&quot;: [" in done
    assert "<time datetime=" in done and "Completed at" in done and "Enqueued at" in done

    failed = body(viewer.get(url("job", "jobs", jobs["failed"])))
    assert "Last error:</strong> RuntimeError: smtp" in failed
    assert "Traceback (most recent call last):" in failed and "Error log" in failed

    running = body(viewer.get(url("job", "jobs", jobs["processing"])))
    assert "processing" in running and "w1" in running
    assert jobs["token"] not in running and "claim_token" not in running

    status = viewer.get(url("job_json", "jobs", jobs["processing"])).json()
    assert "processing" in status["parts"]["status"] and jobs["token"] not in json.dumps(status)


def test_a_job_is_read_only_through_its_own_queues_url(viewer):
    other = enqueue("add", {"a": 1, "b": 1}, queue="high")
    assert viewer.get(url("job", "high", other)).status_code == 200
    assert viewer.get(url("job", "jobs", other)).status_code == 404
    assert viewer.get(url("job_json", "jobs", other)).status_code == 404
    assert viewer.get(url("job", "jobs", "x:..:job")).status_code == 404


# ---------------------------------------------------------------- actions


def post(client: Client, queue: str, **data):
    return client.post(url("action", queue), data, follow=True)


def test_retry_and_requeue_selected(r, manager, jobs):
    response = post(manager, "jobs", action="retry", list="failed", ids=[jobs["failed"]])
    assert "Retried 1 job(s) of jobs." in body(response)
    assert job_status(r, jobs["failed"]) == "pending"
    response = post(manager, "jobs", action="requeue", list="completed", ids=[jobs["completed"]])
    assert "Requeued 1 job(s) of jobs." in body(response)
    assert job_status(r, jobs["completed"]) == "pending"
    # Not finished: left alone, and said so.
    response = post(manager, "jobs", action="retry", list="pending", ids=[jobs["pending"][0]])
    assert "left alone: not finished" in body(response)


def test_delete_selected_asks_first(r, manager, jobs):
    victims = [jobs["pending"][0], jobs["scheduled"], jobs["processing"]]
    confirm = manager.post(url("action", "jobs"), {"action": "delete", "list": "pending", "ids": victims})
    assert confirm.status_code == 200 and "Are you sure?" in body(confirm)
    assert all(job_status(r, i) for i in victims)  # nothing yet
    done = post(manager, "jobs", action="delete", list="pending", ids=victims, confirm="yes")
    assert "Deleted 2 job(s) of jobs." in body(done) and "left alone: running" in body(done)
    assert job_status(r, victims[0]) is None and job_status(r, victims[1]) is None
    assert job_status(r, jobs["processing"]) == "processing"


def test_actions_from_the_job_page_come_back_to_it(r, manager, jobs):
    response = manager.post(url("action", "jobs"), {"action": "retry", "ids": [jobs["failed"]], "back": "job"})
    assert response.status_code == 302 and response["Location"] == url("job", "jobs", jobs["failed"])
    page = body(manager.get(url("job", "jobs", jobs["completed"])))
    assert "Requeue (run again)" in page and "Delete…" in page and "Retry<" not in page


def test_retry_all_failed(r, manager):
    q = get_queue("jobs")
    ids = [enqueue("boom", {}) for _ in range(3)]
    for _ in ids:
        q.fail(q.claim_nowait(), "x", terminal=True)
    r.lpush("queue:jobs:failed", "0" * 36)  # an orphan id: cannot be retried, must not loop
    confirm = manager.post(url("action", "jobs"), {"action": "retry_all", "list": "failed"})
    assert "Retry the 4 job(s)" in body(confirm)
    done = post(manager, "jobs", action="retry_all", list="failed", confirm="yes")
    assert "Retried 3 failed job(s) of jobs." in body(done) and "1 job(s) could not be retried" in body(done)
    assert all(job_status(r, i) == "pending" for i in ids)


@pytest.mark.parametrize("which", ["pending", "scheduled", "completed", "failed"])
def test_purge_a_list_deletes_its_jobs(r, manager, jobs, which):
    q = get_queue("jobs")
    before = browse.list_length(q, which)
    assert before > 0
    purged = [i for i in (jobs[which] if isinstance(jobs[which], list) else [jobs[which]])]
    confirm = manager.post(url("action", "jobs"), {"action": "purge", "list": which})
    assert f"Its {before} job(s) are deleted" in body(confirm)
    done = post(manager, "jobs", action="purge", list=which, confirm="yes")
    assert f"Purged the {which} list of jobs: {before} job(s) deleted." in body(done)
    assert browse.list_length(q, which) == 0
    assert all(job_status(r, i) is None for i in purged)
    assert job_status(r, jobs["processing"]) == "processing"  # other lists untouched


def test_purge_is_chunked_and_releases_unique_keys(r, manager):
    q = get_queue("jobs")
    q.enqueue_many([{"n": n} for n in range(1_200)], name="add")
    unique = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:42")
    done = post(manager, "jobs", action="purge", list="pending", confirm="yes")
    assert "1201 job(s) deleted" in body(done)
    assert r.hget("queue:jobs:unique", "invoice:42") is None and job_status(r, unique) is None
    assert int(r.hget("queue:jobs:stats", "deleted")) == 1_201


def test_the_processing_list_cannot_be_purged(r, manager, jobs):
    response = post(manager, "jobs", action="purge", list="processing", confirm="yes")
    assert "cannot be purged" in body(response) and job_status(r, jobs["processing"]) == "processing"


def test_reclaim_sweep(r, manager):
    q = get_queue("jobs")
    job_id = enqueue("add", {"a": 1, "b": 1})
    q.claim_nowait("gone", lease_ms=1)
    time.sleep(0.01)  # let the 1 ms lease run out; the assertion below waits for nothing
    response = post(manager, "jobs", action="sweep")
    assert "1 reclaimed" in body(response) and job_status(r, job_id) == "pending"


def test_unknown_action_and_nothing_selected(manager, jobs):
    assert "Unknown action." in body(post(manager, "jobs", action="explode"))
    assert "Select the jobs to act on first." in body(post(manager, "jobs", action="retry", list="failed"))


# ------------------------------------------------------- pause and resume


def paused_badge(html: str) -> str | None:
    """The data-paused value of the first pause badge in a page, or None."""
    marker = 'data-paused="'
    if marker not in html:
        return None
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def test_pause_and_resume_each_direction_from_the_overview(r, manager):
    page = body(manager.get(OVERVIEW))
    assert 'name="action" value="pause"' in page and 'name="direction"' in page
    assert paused_badge(page) is None  # nothing is paused: no badge

    done = post(manager, "jobs", action="pause", direction="in")
    assert "Paused enqueueing on jobs: the queue is now paused for enqueueing" in body(done)
    assert done.redirect_chain[-1][0] == OVERVIEW
    assert r.get("queue:jobs:paused") == "in" and get_queue("jobs").stats()["paused"] == "in"
    assert paused_badge(body(done)) == "in" and "enqueue paused" in body(done)
    with pytest.raises(QueuePaused):
        enqueue("add", {"a": 1, "b": 1})

    post(manager, "jobs", action="pause", direction="out")
    assert r.get("queue:jobs:paused") == "all"
    post(manager, "jobs", action="resume", direction="in")
    assert r.get("queue:jobs:paused") == "out"
    assert paused_badge(manager.get(url("overview_json")).json()["parts"]["queues"]) == "out"
    assert r.get("queue:high:paused") is None  # only the queue in the URL

    done = post(manager, "jobs", action="resume", direction="all")
    assert "the queue is now running" in body(done)
    assert r.get("queue:jobs:paused") is None
    enqueue("add", {"a": 1, "b": 1})


def test_the_queue_pages_show_the_pause_state_and_come_back_to_the_list(r, manager, viewer):
    assert paused_badge(body(viewer.get(url("list", "jobs", "pending")))) == "none"
    done = post(manager, "jobs", action="pause", direction="all", list="failed")
    assert done.redirect_chain[-1][0] == url("list", "jobs", "failed")
    assert paused_badge(body(done)) == "all"
    page = body(viewer.get(url("list", "jobs", "pending")))
    assert paused_badge(page) == "all" and ">paused<" in page
    assert 'value="pause"' not in page  # a viewer sees the state, not the buttons
    assert paused_badge(viewer.get(url("summary_json", "jobs")).json()["parts"]["paused"]) == "all"
    assert paused_badge(body(viewer.get(url("list", "high", "pending")))) == "none"


def test_an_unknown_pause_direction_changes_nothing(r, manager):
    done = post(manager, "jobs", action="pause", direction="sideways")
    assert "Unknown direction" in body(done) and r.get("queue:jobs:paused") is None


# ----------------------------------------------------------- requeue now


def test_requeue_now_runs_a_scheduled_job_next(r, manager, jobs):
    page = body(manager.get(url("list", "jobs", "scheduled")))
    assert '<option value="requeue_now">Requeue now selected</option>' in page
    assert "Requeue now<" in body(manager.get(url("job", "jobs", jobs["scheduled"])))  # no "…": no question

    done = post(manager, "jobs", action="requeue_now", list="scheduled", ids=[jobs["scheduled"]])
    assert "Requeued 1 job(s) of jobs to run now." in body(done)
    assert job_status(r, jobs["scheduled"]) == "pending" and r.zcard("queue:jobs:scheduled") == 0
    # At the head of the line, before the two jobs that were already waiting.
    assert get_queue("jobs").claim_nowait("w2").id == jobs["scheduled"]


def test_requeue_now_of_a_running_job_asks_first_and_revokes_its_claim(r, manager):
    q = get_queue("jobs")
    job_id = enqueue("sleepy", {"seconds": 1})
    claimed = q.claim_nowait("w1")
    assert claimed.id == job_id
    assert "Requeue now…" in body(manager.get(url("job", "jobs", job_id)))
    assert '<option value="requeue_now">' in body(manager.get(url("list", "jobs", "processing")))

    before = snapshot(r)
    confirm = manager.post(url("action", "jobs"), {"action": "requeue_now", "list": "processing", "ids": [job_id]})
    assert confirm.status_code == 200 and "Are you sure?" in body(confirm)
    assert "1 of them is running: its claim is revoked" in body(confirm)
    assert snapshot(r) == before  # asking changed nothing

    done = post(manager, "jobs", action="requeue_now", ids=[job_id], back="job", confirm="yes")
    assert done.redirect_chain[-1][0] == url("job", "jobs", job_id)
    assert "Requeued 1 job(s) of jobs to run now." in body(done)
    assert job_status(r, job_id) == "pending" and r.llen("queue:jobs:processing") == 0
    assert r.hget(f"queue:jobs:job:{job_id}", "additional_deliveries") == "1"
    assert q.complete(claimed, {"late": True}) is False  # the old claim can change nothing
    assert job_status(r, job_id) == "pending"


def test_requeue_now_leaves_finished_jobs_alone(r, manager, jobs):
    done = post(manager, "jobs", action="requeue_now", ids=[jobs["completed"], jobs["failed"]])
    assert "Requeued 0 job(s)" in body(done) and "2 job(s) left alone: already finished" in body(done)
    assert job_status(r, jobs["completed"]) == "completed" and job_status(r, jobs["failed"]) == "failed"
    assert "Requeue now" not in body(manager.get(url("job", "jobs", jobs["completed"])))


def test_requeue_now_leaves_a_running_at_most_once_job_alone(r, manager):
    q = get_queue("jobs")
    job_id = enqueue("once", {})
    assert q.claim_nowait("w1").id == job_id
    assert "Requeue now" not in body(manager.get(url("job", "jobs", job_id)))

    # No question first (nothing would be revoked): refused, and said why.
    done = post(manager, "jobs", action="requeue_now", list="processing", ids=[job_id])
    assert "Requeued 0 job(s)" in body(done)
    assert "1 job(s) left alone: at-most-once and running: requeueing would run it twice" in body(done)
    assert job_status(r, job_id) == "processing" and r.llen("queue:jobs:pending") == 0


def test_replay_is_refused_while_another_job_holds_the_unique_key(r, manager):
    q = get_queue("jobs")
    failed = enqueue("boom", {"message": "x"}, unique_key="invoice:1")
    q.fail(q.claim_nowait("w1"), "boom", terminal=True)
    completed = enqueue("add", {"a": 1, "b": 1}, unique_key="invoice:2")
    q.complete(q.claim_nowait("w1"), 2)
    holders = [enqueue("add", {}, unique_key=key) for key in ("invoice:1", "invoice:2")]

    for action, which, job_id in (("retry", "failed", failed), ("requeue", "completed", completed)):
        done = body(post(manager, "jobs", action=action, list=which, ids=[job_id]))
        assert "0 job(s) of jobs." in done
        assert "1 job(s) left alone: another unfinished job holds its unique key" in done and job_id in done
        assert job_status(r, job_id) == which
    assert r.hmget("queue:jobs:unique", "invoice:1", "invoice:2") == holders


# ------------------------------------------------------------ permissions


PAGES = [
    OVERVIEW,
    url("overview_json"),
    url("search") + "?q=x",
    url("list", "jobs", "pending"),
    url("summary_json", "jobs"),
]


def test_anonymous_users_are_sent_to_the_login_page(client, jobs):
    for page in [*PAGES, url("job", "jobs", jobs["failed"])]:
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next="), page
    response = client.post(url("action", "jobs"), {"action": "sweep"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_users_who_are_not_staff_are_sent_to_the_login_page(django_user_model, jobs):
    user = make_user(django_user_model, "outsider", staff=False, perms=("manage_jobs",))
    response = logged_in(user).get(OVERVIEW)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_our_permission_get_403(r, staff_without_permission, jobs):
    before = snapshot(r)
    for page in [*PAGES, url("job", "jobs", jobs["failed"])]:
        assert staff_without_permission.get(page).status_code == 403, page
    for data in (
        {"action": "purge", "list": "pending", "confirm": "yes"},
        {"action": "pause", "direction": "all"},
        {"action": "requeue_now", "ids": [jobs["processing"]], "confirm": "yes"},
    ):
        assert staff_without_permission.post(url("action", "jobs"), data).status_code == 403, data
    assert snapshot(r) == before


def test_view_only_users_see_everything_and_change_nothing(r, viewer, jobs):
    page = body(viewer.get(url("list", "jobs", "failed")))
    assert jobs["failed"] in page and "Purge" not in page and 'name="ids"' not in page
    assert "Retry" not in body(viewer.get(url("job", "jobs", jobs["failed"])))
    for job in (jobs["scheduled"], jobs["processing"]):
        assert "Requeue now" not in body(viewer.get(url("job", "jobs", job)))
    assert 'value="pause"' not in body(viewer.get(OVERVIEW))
    get_queue("jobs").pause("in")
    before = snapshot(r)
    for data in (
        {"action": "retry", "ids": [jobs["failed"]]},
        {"action": "delete", "ids": [jobs["failed"]], "confirm": "yes"},
        {"action": "purge", "list": "failed", "confirm": "yes"},
        {"action": "retry_all", "list": "failed", "confirm": "yes"},
        {"action": "sweep"},
        {"action": "pause", "direction": "all"},
        {"action": "resume", "direction": "all"},
        {"action": "requeue_now", "ids": [jobs["scheduled"]]},
        {"action": "requeue_now", "ids": [jobs["processing"]], "confirm": "yes"},
    ):
        assert viewer.post(url("action", "jobs"), data).status_code == 403
    assert snapshot(r) == before


def test_post_without_a_csrf_token_is_refused(r, django_user_model, jobs):
    client = logged_in(make_user(django_user_model, "careful", perms=("manage_jobs",)), enforce_csrf_checks=True)
    before = snapshot(r)
    for data in (
        {"action": "purge", "list": "pending", "confirm": "yes"},
        {"action": "pause", "direction": "all"},
        {"action": "requeue_now", "ids": [jobs["processing"]], "confirm": "yes"},
    ):
        assert client.post(url("action", "jobs"), data).status_code == 403, data
    assert snapshot(r) == before
    client.get(url("list", "jobs", "pending"))  # sets the CSRF cookie, as a browser would
    token = client.cookies["csrftoken"].value
    data = {"action": "purge", "list": "pending", "confirm": "yes", "csrfmiddlewaretoken": token}
    assert client.post(url("action", "jobs"), data).status_code == 302
    assert r.llen("queue:jobs:pending") == 0


def test_get_never_changes_state(r, manager, jobs):
    before = snapshot(r)
    pages = [*PAGES, url("search") + f"?q={jobs['failed']}"]
    pages += [url("list", "jobs", which) for which in browse.LISTS]
    pages += [url("job", "jobs", i) for i in (jobs["failed"], jobs["completed"], jobs["processing"])]
    pages += [url("job_json", "jobs", jobs["failed"])]
    for page in pages:
        assert manager.get(page).status_code in (200, 302), page
    for query in (
        "action=purge&list=pending&confirm=yes",
        "action=pause&direction=all",
        f"action=requeue_now&ids={jobs['processing']}&confirm=yes",
        f"action=requeue_now&ids={jobs['scheduled']}",
    ):
        assert manager.get(url("action", "jobs") + "?" + query).status_code == 405, query
    assert snapshot(r) == before


# -------------------------------------------------------------- escaping


def test_hostile_strings_are_shown_escaped_everywhere(r, manager):
    q = get_queue("jobs")
    hostile = {"script": HOSTILE[0], "pre": HOSTILE[1], "template": HOSTILE[2]}
    failed = q.enqueue(hostile, name=HOSTILE[1])
    q.fail(q.claim_nowait(), " ".join(HOSTILE), traceback="\n".join(HOSTILE), terminal=True)
    done = q.enqueue(hostile, name=HOSTILE[0])
    q.complete(q.claim_nowait(), hostile)
    running = q.enqueue({}, name="add")
    claimed = q.claim_nowait(HOSTILE[0])
    register_worker(
        r,
        "w-hostile",
        [["jobs", running, claimed.claim_token], [HOSTILE[0], HOSTILE[1], "t"]],
        host=HOSTILE[1],
        state=HOSTILE[0],
    )

    pages = {
        "overview": body(manager.get(OVERVIEW)),
        "overview.json": "".join(manager.get(url("overview_json")).json()["parts"].values()),
        "failed list": body(manager.get(url("list", "jobs", "failed"))),
        "completed list": body(manager.get(url("list", "jobs", "completed"))),
        "processing list": body(manager.get(url("list", "jobs", "processing"))),
        "failed job": body(manager.get(url("job", "jobs", failed))),
        "completed job": body(manager.get(url("job", "jobs", done))),
        "status.json": manager.get(url("job_json", "jobs", running)).json()["parts"]["status"],
        "confirm": body(manager.post(url("action", "jobs"), {"action": "delete", "ids": [failed]})),
        "requeue now": body(manager.post(url("action", "jobs"), {"action": "requeue_now", "ids": [running]})),
    }
    for where, html in pages.items():
        assert "<script>alert" not in html, where
        assert "<img src=x" not in html, where
        assert ">49<" not in html, where
    for where in ("failed job", "completed job"):
        assert "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in pages[where]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[where]
        assert "{{ 7*7 }}" in pages[where]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["failed list"]  # the last error
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in pages["overview"]  # the worker's host


# ---------------------------------------------------------------- outages


def test_redis_unavailable_is_a_readable_page(viewer, jobq_settings):
    from django_jobqueue import connection

    jobq_settings(REDIS_URL="redis://127.0.0.1:1/0", CONNECT_TIMEOUT=0.5)
    connection.reset()
    try:
        response = viewer.get(OVERVIEW)
        assert response.status_code == 503 and "Redis is unavailable" in body(response)
    finally:
        connection.reset()
