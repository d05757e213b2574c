"""Periodic jobs: each tick enqueued exactly once whatever the number of
schedulers, correct calendars across daylight saving, overlap and catch-up,
and wrong definitions refused with the schedule's name. Time is injected
(the queue's clock) wherever it matters; the multi-worker tests run real
worker processes on a one-second schedule."""

from __future__ import annotations

import functools
import json
import threading
import time
from datetime import datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import redis
from django.core.management import CommandError, call_command

from django_jobqueue import InvalidJobOptions, get_queue, job, signals
from django_jobqueue.checks import check_schedules
from django_jobqueue.engine.schedules import LATE_AFTER_MS, Schedule, ScheduleError, ScheduleStore, plan
from django_jobqueue.events import fire
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.registry import unregister
from django_jobqueue.schedules import all_schedules, by_queue
from django_jobqueue.worker import scheduler as scheduler_module
from django_jobqueue.worker.scheduler import Scheduler
from tests.helpers.admin import HOSTILE, body, logged_in, make_user, url
from tests.helpers.schedules import every, step, synced
from tests.helpers.waiting import wait_for
from tests.helpers.workers import start_logged_worker, stop_worker, worker_env

PARIS = ZoneInfo("Europe/Paris")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def runs_by_tick(r, queue: str = "jobs", schedule: str | None = None) -> dict[int, list[str]]:
    """The runs the schedules (or ``schedule``) enqueued on ``queue``, by the tick each is for."""
    found: dict[int, list[str]] = {}
    for key in r.scan_iter(f"queue:{queue}:job:*"):
        fields = r.hgetall(key)
        if fields.get("schedule") and schedule in (None, fields["schedule"]):
            found.setdefault(int(fields["scheduled_for_ms"]), []).append(fields["id"])
    return found


# ------------------------------------------------------------- calendars


def test_an_interval_counts_from_its_start_so_every_scheduler_finds_the_same_ticks():
    s = every(30, start_ms=1_000)
    assert s.tick_after(0) == 1_000
    assert s.tick_after(1_000) == 31_000
    assert s.tick_after(45_500) == 61_000
    assert every(30, start_ms=1_000, end_ms=40_000).tick_after(31_000) is None


def test_a_cron_schedule_runs_in_its_time_zone():
    s = Schedule(name="report", job="add", queue="jobs", cron="0 7 * * mon-fri", timezone="Europe/Paris")
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=PARIS)
    assert s.tick_after(ms(saturday)) == ms(datetime(2026, 12, 7, 7, 0, tzinfo=PARIS))  # Monday, 07:00 in Paris


def test_a_daily_run_at_half_past_two_runs_once_on_both_daylight_saving_days():
    s = Schedule(name="nightly", job="add", queue="jobs", cron="30 2 * * *", timezone="Europe/Paris")
    for day in (datetime(2026, 3, 29, tzinfo=PARIS), datetime(2026, 10, 25, tzinfo=PARIS)):
        start, end = ms(day), ms(day + timedelta(days=1))
        ticks, t = [], s.tick_after(start - 1)
        while t is not None and t < end:
            ticks.append(t)
            t = s.tick_after(t)
        assert len(ticks) == 1, [datetime.fromtimestamp(t / 1000, PARIS) for t in ticks]
    # Spring forward: 02:30 does not exist that night; the run is at 03:00.
    spring = s.tick_after(ms(datetime(2026, 3, 29, tzinfo=PARIS)))
    assert datetime.fromtimestamp(spring / 1000, PARIS).hour == 3


def test_ticks_through_the_store_follow_the_calendar_across_a_daylight_saving_night(r):
    clock_ms = [ms(datetime(2026, 10, 24, 12, 0, tzinfo=PARIS))]
    q = RedisJobQueue(r, "jobs", clock=lambda: clock_ms[0])
    store = ScheduleStore(q)
    hourly = Schedule(
        name="hourly", job="add", queue="jobs", cron="0 * * * *", timezone="Europe/Paris", overlap="allow"
    )
    store.sync([hourly], clock_ms[0])
    while clock_ms[0] < ms(datetime(2026, 10, 25, 12, 0, tzinfo=PARIS)):
        clock_ms[0] += 60_000
        step(store, hourly)
    ticks = sorted(runs_by_tick(r))
    # 24 hours of wall clock from noon to noon hold 25 real hours on the fall-back night.
    assert len(ticks) == 25 and all(b - a == 3_600_000 for a, b in zip(ticks, ticks[1:], strict=False))


# ------------------------------------------------------ exactly once, no leader


def test_a_tick_is_enqueued_once_however_many_schedulers_take_it(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    stores = [ScheduleStore(q) for _ in range(3)]
    s = every(1, overlap="allow")
    stores[0].sync([s], clock())
    for _ in range(20):
        clock.advance(1)
        for store in stores:  # each reads the due tick; only the first step enqueues it
            step(store, s)
    ticks = runs_by_tick(r)
    assert len(ticks) == 20 and all(len(ids) == 1 for ids in ticks.values())
    assert stores[0].state("tick")["fired"] == "20"


def test_schedulers_racing_on_threads_enqueue_each_tick_once(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    s = every(1, overlap="allow")
    ScheduleStore(q).sync([s], clock())
    clock.advance(30)  # thirty ticks are due at once, all on time within LATE_AFTER_MS
    assert 30_000 < LATE_AFTER_MS
    barrier = threading.Barrier(4)

    def race():
        barrier.wait()
        for _ in range(40):
            step(ScheduleStore(q), s)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ticks = runs_by_tick(r)
    assert len(ticks) == 30 and all(len(ids) == 1 for ids in ticks.values())


def test_a_restarted_scheduler_keeps_the_next_tick_and_a_changed_definition_restarts_it(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    store = ScheduleStore(q)
    store.sync([every(60)], clock())
    first = store.state("tick")["next_ms"]
    clock.advance(30)
    store.sync([every(60)], clock())  # a worker restarting: the same definition
    assert store.state("tick")["next_ms"] == first
    store.sync([every(90)], clock())
    assert store.state("tick")["next_ms"] != first
    store.sync([], clock())  # no longer defined: retired, its runs untouched
    assert store.state("tick") == {} and store.names() == []


# ------------------------------------------------------ overlap and catch-up


def test_overlap_skip_runs_nothing_while_the_last_run_is_unfinished(r, clock):
    s = every(1)
    q, store = synced(r, clock, s)
    clock.advance(1)
    (first,) = step(store, s)
    clock.advance(1)
    assert step(store, s) == []  # the first run is still pending
    state = store.state("tick")
    assert state["skipped"] == "1" and state["last_skip"] == "overlap"
    claimed = q.claim(timeout_ms=0)
    assert claimed is not None and claimed.id == first
    q.complete(claimed, None)
    clock.advance(1)
    assert len(step(store, s)) == 1


def test_overlap_queue_owes_one_run_and_enqueues_it_when_the_last_one_finishes(r, clock):
    s = every(1, overlap="queue")
    q, store = synced(r, clock, s)
    clock.advance(1)
    (first,) = step(store, s)
    for _ in range(3):
        clock.advance(1)
        assert step(store, s) == []  # owed, once
    assert store.state("tick")["owed_ms"]
    claimed = q.claim(timeout_ms=0)
    q.complete(claimed, None)
    owed = step(store, s)
    assert len(owed) == 1 and owed[0] != first
    assert "owed_ms" not in store.state("tick")


def test_overlap_allow_enqueues_every_tick(r, clock):
    s = every(1, overlap="allow")
    q, store = synced(r, clock, s)
    for _ in range(3):
        clock.advance(1)
        assert len(step(store, s)) == 1


@pytest.mark.parametrize(
    "catch_up, runs, missed",
    [("skip", 1, 10), ("once", 2, 9), ("all", 11, 0)],
)
def test_catch_up_after_a_stopped_period(r, clock, catch_up, runs, missed):
    s = every(60, catch_up=catch_up, overlap="allow")
    q, store = synced(r, clock, s)
    # Eleven ticks came while no scheduler ran: ten over a minute ago (late), one just now.
    clock.advance(60 * 11 + 1)
    assert len(step(store, s)) == runs
    state = store.state("tick")
    assert int(state.get("skipped", 0)) == missed
    assert int(state["next_ms"]) > clock()


def test_catch_up_all_is_capped():
    # Every second for 10 000 s: the last minute's 61 ticks are on time, the 9 940 before are late.
    step_plan = plan(every(1, catch_up="all", overlap="allow"), 0, 10_000_000)
    assert len(step_plan.runs) == 100 + 61 and step_plan.missed == 9_940 - 100
    assert step_plan.runs[0] == 9_840_000 and step_plan.next_ms == 10_001_000


def test_with_overlap_skip_a_step_with_several_ticks_runs_only_the_newest(r, clock):
    s = every(1)  # overlap "skip": runs of one step would run at once
    q, store = synced(r, clock, s)
    clock.advance(3)
    (job_id,) = step(store, s)
    assert r.hget(f"queue:jobs:job:{job_id}", "scheduled_for_ms") == str(clock())
    assert store.state("tick")["skipped"] == "2" and store.state("tick")["last_skip"] == "overlap"
    with pytest.raises(ScheduleError, match="needs overlap 'allow'"):
        every(60, catch_up="all")


def test_a_paused_schedule_passes_its_ticks_over_and_resumes(r, clock):
    s = every(1, overlap="allow")
    q, store = synced(r, clock, s)
    store.pause("tick")
    clock.advance(1)
    assert step(store, s) == []
    assert store.state("tick")["last_skip"] == "paused"
    store.resume("tick")
    clock.advance(1)
    assert len(step(store, s)) == 1


def test_a_run_carries_its_schedule_and_tick_and_the_fixed_payload(r, clock):
    s = Schedule(name="sync", job="add", queue="jobs", every_ms=5000, payload_json='{"a":1,"b":2}', jitter_ms=2000)
    q, store = synced(r, clock, s)
    clock.advance(5)
    (job_id,) = step(store, s)
    fields = r.hgetall(f"queue:jobs:job:{job_id}")
    assert fields["schedule"] == "sync" and fields["payload"] == '{"a":1,"b":2}' and fields["name"] == "add"
    tick = int(fields["scheduled_for_ms"])
    delay = s.jitter_for(tick)
    assert 0 <= delay <= 2000 and s.jitter_for(tick) == delay  # the same for every scheduler
    assert fields["status"] == ("scheduled" if delay else "pending")
    # tick.lua writes a run as enqueue.lua writes a job (lua/_add.lua), plus its schedule fields.
    enqueued = r.hgetall(f"queue:jobs:job:{q.enqueue({'a': 1, 'b': 2}, name='add', delay_ms=delay)}")
    assert set(fields) == set(enqueued) | {"schedule", "scheduled_for_ms"}


# ------------------------------------------------------------ definitions


def test_wrong_definitions_on_job_are_refused_naming_the_schedule():
    cases = [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"every": 0.5}, "at least 1 second"),
        ({"cron": "0 7 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 7 * * *", "every": 60}, "exactly one of cron and every"),
        ({"every": 60, "overlap": "sometimes"}, "overlap must be one of"),
        ({"every": 60, "catch_up": "later"}, "catch_up must be one of"),
        ({"every": 60, "start": datetime(2026, 1, 1)}, "aware datetime"),
        ({"every": 60, "payload": {1, 2}}, "not JSON-encodable"),
    ]
    for options, message in cases:
        with pytest.raises(InvalidJobOptions, match=message) as caught:

            @job(name="scheduled_wrong", **options)
            def handler(payload, job):
                pass

        assert "schedule 'scheduled_wrong'" in str(caught.value)
    unregister("scheduled_wrong")
    with pytest.raises(ScheduleError, match="not allowed in key names"):
        Schedule(name="a:b", job="add", queue="jobs", every_ms=60_000)


def test_a_schedule_on_job_is_built_with_the_jobs_queue_in_the_projects_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"

    @job(name="scheduled_right", queue="high", every=timedelta(minutes=5), payload={"x": 1})
    def handler(payload, job):
        pass

    try:
        built = {s.name: s for s in all_schedules()}["scheduled_right"]
        assert (built.queue, built.every_ms, built.payload_json, built.timezone) == (
            "high",
            300_000,
            '{"x":1}',
            "Europe/Paris",
        )
    finally:
        unregister("scheduled_right")


def test_the_system_check_names_a_wrong_schedule_in_settings(jobq_settings):
    jobq_settings(SCHEDULES={"nightly": {"job": "no_such_job", "cron": "0 3 * * *"}})
    (error,) = check_schedules()
    assert error.id == "django_jobqueue.E003" and "schedule 'nightly'" in error.msg and "no_such_job" in error.msg
    jobq_settings(SCHEDULES={"nightly": {"job": "add", "cron": "0 3 * * *", "queue": "nowhere"}})
    (error,) = check_schedules()
    assert "schedule 'nightly'" in error.msg and "nowhere" in error.msg
    jobq_settings(SCHEDULES={"nightly": {"job": "add", "cron": "0 3 * * *"}})
    assert check_schedules() == []


# ---------------------------------------------------------- real workers


def test_three_workers_and_a_one_second_schedule_enqueue_every_tick_once(r, redis_server, tmp_path):
    env = worker_env(redis_server.url, "tests.settings_schedules")
    workers = [
        start_logged_worker(env, tmp_path / f"w{i}.log", "--queue", "ticks", "--concurrency", "4") for i in range(3)
    ]
    every_second = functools.partial(runs_by_tick, r, "ticks", "every-second")
    try:
        wait_for(lambda: len(every_second()) >= 3, timeout=30, what="three ticks")
        workers[0].kill()  # one scheduler dies mid-way: the others go on, no tick lost or doubled
        workers[0].wait()
        first = min(every_second())
        wait_for(lambda: len(every_second()) >= 7, timeout=30, what="seven ticks")
    finally:
        for w in workers[1:]:
            stop_worker(w)
    ticks = every_second()
    assert all(len(ids) == 1 for ids in ticks.values()), ticks
    span = sorted(t for t in ticks if t >= first)
    assert span == list(range(span[0], span[-1] + 1, 1000)), "a tick was skipped"


def test_a_schedule_whose_runs_last_longer_than_its_period_never_runs_two_at_once(r, redis_server, tmp_path):
    env = worker_env(redis_server.url, "tests.settings_schedules")
    workers = [
        start_logged_worker(env, tmp_path / f"w{i}.log", "--queue", "ticks", "--concurrency", "4") for i in range(2)
    ]
    try:
        wait_for(lambda: len(finished_runs(r, "longer-than-its-period")) >= 2, timeout=40, what="two runs")
    finally:
        for w in workers:
            stop_worker(w)
    runs = sorted(finished_runs(r, "longer-than-its-period"))
    for (_started, ended), (next_started, _ended) in zip(runs, runs[1:], strict=False):
        assert next_started >= ended, runs  # each run began after the one before had finished
    assert int(r.hget("queue:ticks:schedule:longer-than-its-period", "skipped")) >= 2  # ticks passed over meanwhile


def finished_runs(r, schedule: str) -> list[tuple[int, int]]:
    """(started, finished) ms of the schedule's runs that have finished."""
    out = []
    for ids in runs_by_tick(r, "ticks", schedule).values():
        fields = r.hgetall(f"queue:ticks:job:{ids[0]}")
        if fields.get("status") == "completed":
            out.append((int(fields["claimed_at_ms"]), int(fields["completed_at_ms"])))
    return out


def test_a_worker_with_no_scheduler_enqueues_nothing(r, redis_server, tmp_path):
    env = worker_env(redis_server.url, "tests.settings_schedules")
    worker = start_logged_worker(env, tmp_path / "w.log", "--queue", "ticks", "--no-scheduler")
    try:
        wait_for(lambda: r.zcard("queue:workers") == 1, timeout=30, what="the worker to start")
        time.sleep(2.5)  # the schedule has a tick every second
    finally:
        stop_worker(worker)
    assert runs_by_tick(r, "ticks") == {}
    assert r.zcard("queue:ticks:schedules") == 0  # nor writes the schedules


def test_the_scheduler_thread_runs_until_the_worker_stops(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    stopping = threading.Event()
    s = every(1, overlap="allow")
    scheduler = Scheduler({"jobs": q}, {"jobs": [s]}, stopping, poll_s=0.05)
    ScheduleStore(q).sync([s], clock())
    thread = scheduler.start()
    clock.advance(1)
    wait_for(lambda: len(runs_by_tick(r)) == 1, what="the first tick")
    stopping.set()
    thread.join(2)
    assert not thread.is_alive()


def test_a_worker_syncs_its_schedules_by_the_servers_clock(r):
    q = RedisJobQueue(r, "jobs")
    Scheduler({"jobs": q}, {"jobs": [every(3600)]}, threading.Event()).sync()
    seconds, _micros = r.time()
    assert 0 < int(r.zscore("queue:jobs:schedules", "tick")) - seconds * 1000 <= 3_600_000


# ------------------------------------------------------------- the command


def test_jobq_schedules_lists_pauses_resumes_and_runs_now(r, jobq_settings):
    jobq_settings(SCHEDULES={"nightly": {"job": "add", "cron": "0 3 * * *", "timezone": "Europe/Paris"}})
    with pytest.raises(CommandError, match="no worker has started it"):
        call_command("jobq_schedules", "run-now", "nightly")
    start_as_a_worker_would()
    out = StringIO()
    call_command("jobq_schedules", stdout=out)
    assert "nightly  [active]  add on jobs, cron '0 3 * * *' (Europe/Paris)" in out.getvalue()
    assert "T03:00:00+0" in out.getvalue()  # the next run, in the schedule's time zone
    call_command("jobq_schedules", "pause", "nightly", stdout=StringIO())
    listed = json.loads(call_command_output("jobq_schedules", "--json"))
    assert listed["schedules"][0]["paused"] is True
    out = StringIO()
    call_command("jobq_schedules", "run-now", "nightly", stdout=out)
    assert "not enqueued: paused" in out.getvalue()
    call_command("jobq_schedules", "resume", "nightly", stdout=StringIO())
    out = StringIO()
    call_command("jobq_schedules", "run-now", "nightly", stdout=out)
    (job_id,) = out.getvalue().split()[1:]
    assert r.hget(f"queue:jobs:job:{job_id}", "schedule") == "nightly"
    out = StringIO()
    call_command("jobq_schedules", "run-now", "nightly", stdout=out)  # overlap "skip": the first is pending
    assert "not enqueued: overlap" in out.getvalue()
    with pytest.raises(CommandError, match="no schedule named 'nope'"):
        call_command("jobq_schedules", "pause", "nope")


def start_as_a_worker_would() -> None:
    """Write the defined schedules to Redis, as a worker does when it starts."""
    defined = all_schedules()
    queues = {s.queue for s in defined}
    Scheduler({q: get_queue(q) for q in queues}, by_queue(defined), threading.Event()).sync()


def call_command_output(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# ------------------------------------------------------------- the signals


def test_ticks_publish_events_that_fire_schedule_fired_and_schedule_skipped(r, clock):
    s = every(1)
    q, store = synced(r, clock, s)
    heard: list[tuple[str, dict]] = []

    def on_fired(sender, **kwargs):
        heard.append(("fired", kwargs))

    def on_skipped(sender, **kwargs):
        heard.append(("skipped", kwargs))

    signals.schedule_fired.connect(on_fired)
    signals.schedule_skipped.connect(on_skipped)
    pubsub = r.pubsub()
    pubsub.subscribe(q.keys.events)
    try:
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, what="the subscription")
        clock.advance(1)
        (job_id,) = step(store, s)
        clock.advance(1)
        assert step(store, s) == []  # overlap: the first run is still pending
        messages = []
        while len([m for m in messages if m["event"].startswith("schedule_")]) < 2:
            message = pubsub.get_message(timeout=5)
            assert message is not None, "an event is missing"
            messages.append(json.loads(message["data"]))
        for message in messages:
            fire(message, "jobs")
    finally:
        pubsub.close()
        signals.schedule_fired.disconnect(on_fired)
        signals.schedule_skipped.disconnect(on_skipped)
    (fired,) = [kwargs for kind, kwargs in heard if kind == "fired"]
    (skipped,) = [kwargs for kind, kwargs in heard if kind == "skipped"]
    assert (fired["schedule"], fired["job_id"], fired["name"]) == ("tick", job_id, "add")
    assert (skipped["schedule"], skipped["reason"], skipped["job_id"]) == ("tick", "overlap", "")
    assert skipped["event"]["scheduled_for_ms"] == clock()


# ------------------------------------------------------------- the admin


def test_the_admin_schedules_page_shows_each_schedule_escaped_and_its_runs(r, jobq_settings, manager):
    hostile = HOSTILE[0]
    jobq_settings(
        SCHEDULES={
            "nightly": {"job": "add", "cron": "0 3 * * *", "timezone": "Europe/Paris"},
            hostile: {"job": "add", "every": 60},
        }
    )
    page = body(manager.get(url("schedules")))
    assert "nightly" in page and "cron 0 3 * * * (Europe/Paris)" in page
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "not started by a worker yet" in page
    start_as_a_worker_would()
    response = manager.post(url("schedules"), {"action": "run-now", "name": "nightly"})
    assert response.status_code == 302
    (run_id,) = r.lrange("queue:jobs:schedule:nightly:runs", 0, -1)
    page = body(manager.get(url("schedules")))
    assert url("job", "jobs", run_id) in page and "pending" in page  # its latest run, linked, with its status


def test_the_admin_schedule_actions_need_the_manage_permission_and_csrf(r, jobq_settings, viewer, django_user_model):
    jobq_settings(SCHEDULES={"nightly": {"job": "add", "cron": "0 3 * * *"}})
    page = body(viewer.get(url("schedules")))
    assert "nightly" in page and 'value="pause"' not in page  # a viewer gets no buttons
    viewer.post(url("schedules"), {"action": "pause", "name": "nightly"})
    assert r.hget("queue:jobs:schedule:nightly", "paused") is None  # nor can post one
    careful = logged_in(make_user(django_user_model, "careful", perms=("manage_jobs",)), enforce_csrf_checks=True)
    assert careful.post(url("schedules"), {"action": "pause", "name": "nightly"}).status_code == 403
    assert r.hget("queue:jobs:schedule:nightly", "paused") is None
    manager = logged_in(make_user(django_user_model, "boss", perms=("manage_jobs",)))
    manager.post(url("schedules"), {"action": "pause", "name": "nightly"})
    assert r.hget("queue:jobs:schedule:nightly", "paused") == "1"
    assert "paused" in body(manager.get(url("schedules")))
    manager.post(url("schedules"), {"action": "resume", "name": "nightly"})
    assert r.hget("queue:jobs:schedule:nightly", "paused") is None


# ------------------------------------------------- the scheduler's round trips


def test_a_scheduler_pass_is_one_round_trip_and_steps_what_it_expects(r, clock, monkeypatch):
    q = RedisJobQueue(r, "jobs", clock=clock)
    defined = [Schedule(name=f"s{i}", job="add", queue="jobs", every_ms=1000, overlap="allow") for i in range(3)]
    ScheduleStore(q).sync(defined, clock())
    scheduler = Scheduler({"jobs": q}, {"jobs": defined}, threading.Event())
    pipelines = []
    real = scheduler_module.scripts.run_pipeline
    monkeypatch.setattr(
        scheduler_module.scripts, "run_pipeline", lambda *a, **k: pipelines.append(len(a[1])) or real(*a, **k)
    )
    clock.advance(1)
    assert scheduler.run_once() == []  # the first pass reads: three due, stepped at the next
    for _ in range(5):
        clock.advance(1)
        assert len(scheduler.run_once()) == 3  # each pass: the three steps, then the read
    assert pipelines == [1] + [4] * 5  # one pipeline a pass: steps and the read together
    ticks = runs_by_tick(r)
    assert all(len(ids) == 3 for ids in ticks.values()) and len(ticks) == 5  # from the first tick on, none skipped
    assert sorted(ticks) == list(range(min(ticks), min(ticks) + 5000, 1000))


def test_schedulers_whose_expectations_are_out_of_date_still_enqueue_each_tick_once(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    s = every(1, overlap="allow")
    ScheduleStore(q).sync([s], clock())
    schedulers = [Scheduler({"jobs": q}, {"jobs": [s]}, threading.Event()) for _ in range(3)]
    for _ in range(10):
        clock.advance(1)
        for scheduler in schedulers:  # all expect the same tick; the first takes it, the others learn where it went
            scheduler.run_once()
    ticks = runs_by_tick(r)
    assert all(len(ids) == 1 for ids in ticks.values())
    assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1, 1000)) and len(ticks) >= 9


# ------------------------------------------------- what a step refuses to do


def test_a_step_planned_ahead_of_the_servers_clock_is_refused_and_changes_nothing(r, clock):
    s = every(60, overlap="allow")
    q, store = synced(r, clock, s)
    clock.advance(60)
    due = int(store.state("tick")["next_ms"])
    # A worker whose clock runs an hour ahead plans the next hour's ticks (59 of them late).
    assert store.tick(s, due, clock() + 3_600_000) is None
    assert store.state("tick")["next_ms"] == str(due) and runs_by_tick(r) == {}
    assert len(store.tick(s, due, clock())) == 1


def test_a_step_for_another_definition_is_refused_and_the_scheduler_writes_its_own_again(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    mine, theirs = every(60, overlap="allow"), every(30, overlap="allow", payload_json='{"v":2}')
    ScheduleStore(q).sync([theirs], clock())  # a worker of another release wrote its definition last
    clock.advance(30)
    assert ScheduleStore(q).tick(mine, clock(), clock()) is None  # no run with the old calendar or payload
    assert runs_by_tick(r) == {}
    scheduler = Scheduler({"jobs": q}, {"jobs": [mine]}, threading.Event())
    scheduler.run_once()  # reads: the tick is due
    scheduler.run_once()  # its step is refused: another definition
    scheduler.run_once()  # writes its own again (restarting from its next tick)
    assert ScheduleStore(q).state("tick")["spec_hash"] == mine.spec_hash


def test_an_owed_run_is_kept_until_the_last_run_finishes_and_never_lost(r, clock):
    s = every(10, overlap="queue")
    q, store = synced(r, clock, s)
    clock.advance(10)
    (first,) = step(store, s)
    clock.advance(10)
    assert step(store, s) == [] and store.state("tick")["owed_ms"]  # first still pending: one run owed
    assert store.release_owed(s, clock()) == [] and store.state("tick")["owed_ms"]  # kept, not dropped
    q.complete(q.claim(timeout_ms=0), None)
    clock.advance(10)
    (served,) = step(store, s)  # the next tick's run serves the run owed
    assert "owed_ms" not in store.state("tick") and served != first
    assert store.state("tick")["fired"] == "2"


def test_a_step_meeting_a_key_of_the_wrong_type_changes_nothing(r, clock):
    s = every(1, overlap="allow")
    q, store = synced(r, clock, s)
    clock.advance(1)
    before = store.state("tick")
    r.set(q.keys.pending, "not a list")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.tick(s, int(before["next_ms"]), clock())
    assert store.state("tick") == before


def test_a_changed_definition_never_restarts_at_a_tick_already_run(r, clock):
    s = every(60, overlap="allow")
    q, store = synced(r, clock, s)
    clock.advance(60)
    (job_id,) = step(store, s)
    ran = int(r.hget(f"queue:jobs:job:{job_id}", "scheduled_for_ms"))
    changed = every(60, overlap="allow", payload_json='{"v":2}')
    store.sync([changed], ran - 1)  # its time read a round trip before that step: first tick would be `ran`
    assert int(store.state("tick")["next_ms"]) == ran + 60_000


def test_a_cron_expression_has_five_fields():
    with pytest.raises(ScheduleError, match="five fields"):
        Schedule(name="x", job="add", queue="jobs", cron="0 30 2 * * *")


def test_catching_up_never_runs_a_tick_after_the_schedules_end():
    minute = 60_000
    ended = every(60, start_ms=0, end_ms=10 * minute, catch_up="once")
    step_plan = plan(ended, 5 * minute, 1000 * minute)
    assert step_plan.runs == [10 * minute] and step_plan.missed == 5 and step_plan.next_ms is None
    all_of_them = plan(every(60, end_ms=10 * minute, catch_up="all", overlap="allow"), 5 * minute, 1000 * minute)
    assert all_of_them.runs == [t * minute for t in range(5, 11)] and all_of_them.missed == 0


def test_a_step_for_a_retired_schedule_is_refused_and_writes_nothing_back(r, clock):
    q = RedisJobQueue(r, "jobs", clock=clock)
    s = every(60, overlap="allow")
    store = ScheduleStore(q)
    store.sync([s], clock())
    clock.advance(60)
    scheduler = Scheduler({"jobs": q}, {"jobs": [s]}, threading.Event())  # an older release's worker
    scheduler.run_once()  # reads: the tick is due
    store.sync([], clock())  # a newer release no longer defines it: retired
    assert scheduler.run_once() == []  # its step: refused, the schedule is gone
    scheduler.run_once()
    assert store.names() == [] and store.state("tick") == {}  # not brought back
