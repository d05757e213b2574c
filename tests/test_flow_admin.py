"""A queue's flow limits as operators see and change them: the admin's
overview and its form, and ``manage.py jobq_queues``."""

from __future__ import annotations

import copy
import getpass
import json

import pytest
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.management.base import CommandError

from django_jobqueue import enqueue, get_queue
from django_jobqueue.engine.limits import FlowLimits, LimitsState, Rate, read_state, set_limits
from tests.helpers.admin import HOSTILE, OVERVIEW, body, logged_in, make_user, url
from tests.helpers.commands import command_output

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(jobq_settings):
    """Queue "jobs" with GLOBAL_CONCURRENCY 2 and RATE_LIMIT 5 a minute in its settings."""
    queues = copy.deepcopy(settings.JOBQUEUE["QUEUES"])
    queues["jobs"].update(GLOBAL_CONCURRENCY=2, RATE_LIMIT="5/m")
    jobq_settings(QUEUES=queues)
    return get_queue("jobs")


def state(name: str = "jobs") -> LimitsState:
    q = get_queue(name)
    return read_state(q.client, q.keys, q.limits)


def change(client, queue: str = "jobs", **data):
    return client.post(url("limits", queue), data, follow=True)


def redis_state(r) -> dict:
    """Every key's value, except the throughput samples the overview writes."""
    return {k: r.dump(k) for k in sorted(r.keys("*")) if not k.endswith(":stats:samples")}


# ------------------------------------------------------------------ shown


def test_the_overview_shows_each_queues_limits_and_their_use(r, viewer, limited):
    for n in range(3):
        enqueue("add", {"a": n, "b": 0})
    job = limited.claim_nowait("w1")
    assert job is not None
    page = body(viewer.get(OVERVIEW))
    assert "concurrency 2 <small>(from settings)</small>" in page
    assert "1 of 2 slots in use" in page
    assert "rate 5/m <small>(from settings)</small>" in page
    assert "1 of 5 this minute" in page
    # A queue without limits says so, and how many of its jobs run.
    assert "concurrency none <small>(from settings)</small>" in page and "0 in use (no limit)" in page
    # The live refresh renders the same cell.
    part = viewer.get(url("overview_json")).json()["parts"]["flow"]
    assert "1 of 2 slots in use" in part and "1 of 5 this minute" in part
    # A viewer gets no form.
    assert url("limits", "jobs") not in page and "Set limits" not in page


def test_a_run_time_override_is_marked_with_the_settings_value(manager, limited):
    set_limits(limited.client, limited.keys, who="ops", global_concurrency=4)
    page = body(manager.get(OVERVIEW))
    assert '<span data-limit="global_concurrency" data-source="run-time">concurrency 4' in page
    assert "(set at run time (settings: 2))" in page and "0 of 4 slots in use" in page
    assert '<span data-limit="rate_limit" data-source="settings">rate 5/m <small>(from settings)' in page
    assert "by ops" in page
    # The form starts from the limits in force.
    assert f'action="{url("limits", "jobs")}"' in page
    assert 'name="global_concurrency" min="0" step="1" value="4"' in page
    assert 'name="rate_limit" value="5/m"' in page


def test_stored_text_is_shown_escaped(r, viewer):
    q = get_queue("jobs")
    set_limits(q.client, q.keys, who=HOSTILE[0] + HOSTILE[1], rate=Rate(3, 1000))
    for page in (body(viewer.get(OVERVIEW)), viewer.get(url("overview_json")).json()["parts"]["flow"]):
        assert "by &lt;script&gt;alert(1)&lt;/script&gt;&lt;/pre&gt;&lt;img" in page
        assert "<script>alert" not in page and "<img src=x" not in page


def test_limits_redis_cannot_read_are_said_so_and_the_page_is_served(r, viewer):
    r.set(get_queue("jobs").keys.limits, "not a hash")
    response = viewer.get(OVERVIEW)
    assert response.status_code == 200
    page = body(response)
    assert "the run-time limits cannot be read:" in page and "WRONGTYPE" in page
    assert "concurrency none <small>(from settings)</small>" in page


# ---------------------------------------------------------------- changed


def test_a_manager_sets_limits_and_the_change_is_in_the_admin_log(r, manager, limited):
    response = change(manager, action="set", global_concurrency="3", rate_limit="10/s")
    page = body(response)
    assert response.redirect_chain == [(OVERVIEW, 302)]
    assert (
        "Limits of jobs: global concurrency from 2 (from settings) to 3 (set at run time); "
        "rate limit from 5/m (from settings) to 10/s (set at run time)." in page
    )
    now = state()
    assert now.effective == FlowLimits(3, Rate(10, 1000))
    assert now.overridden == {"global_concurrency", "rate_limit"}
    assert now.configured == FlowLimits(2, Rate(5, 60_000))  # the settings stay as they are
    record = now.changes[0]
    assert record["who"] == "manager" and record["before"] == {}
    assert record["after"] == {"global_concurrency": "3", "rate_count": "10", "rate_window_ms": "1000"}
    (entry,) = LogEntry.objects.all()
    assert (entry.user.username, entry.object_id, entry.object_repr) == ("manager", "jobs", "queue jobs")
    assert entry.action_flag == CHANGE and entry.content_type.model == "jobqueue"
    assert "global concurrency from 2 (from settings) to 3 (set at run time)" in entry.change_message
    assert "concurrency 3 <small>(set at run time (settings: 2))</small>" in page


def test_only_the_limit_changed_becomes_an_override(manager, limited):
    change(manager, action="set", global_concurrency="2", rate_limit="20/m")
    assert state().overridden == {"rate_limit"}
    assert state().effective == FlowLimits(2, Rate(20, 60_000))
    response = change(manager, action="set", global_concurrency="2", rate_limit="20/m")
    assert "already so: nothing changed" in body(response)
    assert LogEntry.objects.count() == 1 and len(state().changes) == 1


def test_blank_means_no_limit_whatever_the_settings_say(manager, limited):
    page = body(change(manager, action="set", global_concurrency="", rate_limit=""))
    assert state().effective == FlowLimits(0, None)
    assert state().overridden == {"global_concurrency", "rate_limit"}
    assert "global concurrency from 2 (from settings) to none (set at run time)" in page
    assert "concurrency none <small>(set at run time (settings: 2))</small>" in page


def test_reset_goes_back_to_the_settings(manager, limited):
    change(manager, action="set", global_concurrency="7", rate_limit="5/m")
    page = body(change(manager, action="reset"))
    assert "global concurrency from 7 (set at run time) to 2 (from settings)" in page
    assert state().effective == limited.limits and state().overridden == frozenset()
    assert state().changes[0]["reset"] is True and state().changes[0]["who"] == "manager"
    assert [e.change_message for e in LogEntry.objects.order_by("pk")][1] == (
        "Changed the flow limits: global concurrency from 7 (set at run time) to 2 (from settings)."
    )
    # Nothing overridden: nothing to reset, and nothing recorded.
    assert "already follow the settings: nothing to reset" in body(change(manager, action="reset"))
    assert LogEntry.objects.count() == 2 and len(state().changes) == 2


@pytest.mark.parametrize(
    ("concurrency", "rate", "said"),
    [
        ("-1", "", "the global concurrency is a whole number of jobs"),
        ("1.5", "", "the global concurrency is a whole number of jobs"),
        ("", "ten per second", "a rate limit is a string like &#x27;10/s&#x27;"),
        ("", "0/s", "at least one job"),
        ("", HOSTILE[0], "got &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_changes_nothing(r, manager, limited, concurrency, rate, said):
    before = redis_state(r)
    response = change(manager, action="set", global_concurrency=concurrency, rate_limit=rate)
    page = body(response)
    assert "The limits of jobs are left as they were" in page and said in page
    assert "<script>alert" not in page
    assert redis_state(r) == before
    assert not LogEntry.objects.exists()


def test_an_unknown_action_or_queue_changes_nothing(r, manager):
    before = redis_state(r)
    assert "Unknown action." in body(change(manager, action="drop", global_concurrency="1"))
    assert manager.post(url("limits", "nope"), {"action": "set", "global_concurrency": "1"}).status_code == 404
    assert redis_state(r) == before


# ------------------------------------------------------------------ who may


def test_without_manage_jobs_a_change_is_403_and_nothing_changes(r, viewer, staff_without_permission, limited):
    before = redis_state(r)
    for client in (viewer, staff_without_permission):
        for data in ({"action": "set", "global_concurrency": "9"}, {"action": "reset"}):
            assert client.post(url("limits", "jobs"), data).status_code == 403
    assert redis_state(r) == before and not LogEntry.objects.exists()


def test_anonymous_users_are_sent_to_the_login_page(r, client):
    response = client.post(url("limits", "jobs"), {"action": "set", "global_concurrency": "1"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not r.exists(get_queue("jobs").keys.limits)


def test_get_changes_nothing(r, manager):
    response = manager.get(url("limits", "jobs") + "?action=set&global_concurrency=1")
    assert response.status_code == 405
    assert not r.exists(get_queue("jobs").keys.limits) and not LogEntry.objects.exists()


def test_a_post_without_the_csrf_token_is_refused(r, django_user_model):
    client = logged_in(make_user(django_user_model, "careful", perms=("manage_jobs",)), enforce_csrf_checks=True)
    assert client.post(url("limits", "jobs"), {"action": "set", "global_concurrency": "1"}).status_code == 403
    assert not r.exists(get_queue("jobs").keys.limits)
    client.get(OVERVIEW)  # sets the CSRF cookie, as a browser would
    data = {"action": "set", "global_concurrency": "1", "csrfmiddlewaretoken": client.cookies["csrftoken"].value}
    assert client.post(url("limits", "jobs"), data).status_code == 302
    assert state().effective.global_concurrency == 1


# ----------------------------------------------------------- jobq_queues


def test_jobq_queues_lists_every_queue_with_its_limits_and_use(limited):
    enqueue("add", {"a": 1, "b": 2})
    assert limited.claim_nowait("w1") is not None
    text = command_output("jobq_queues")
    assert "jobs\n    global concurrency 2 (from settings): 1 of 2 slots in use\n" in text
    assert "    rate limit 5/m (from settings): 1 of 5 this minute\n" in text
    assert "high\n    global concurrency none (from settings): 0 in use (no limit)\n" in text
    assert command_output("jobq_queues", "list") == text
    data = json.loads(command_output("jobq_queues", "list", "jobs", "--json"))
    (jobs,) = data["queues"]
    assert (jobs["queue"], jobs["global_concurrency"], jobs["rate_limit"]) == ("jobs", "2", "5/m")
    assert jobs["global_concurrency_source"] == "settings" and jobs["slots"] == "1 of 2 slots in use"


def test_jobq_queues_prints_stored_text_escaped(limited):
    set_limits(limited.client, limited.keys, who="\x1b[2Jeve\nfake line", global_concurrency=1)
    text = command_output("jobq_queues", "list", "jobs")
    assert "    last changed by \\x1b[2Jeve\\nfake line\n" in text and "\x1b" not in text


def test_jobq_queues_set_limit_and_reset_limit(limited):
    text = command_output("jobq_queues", "set-limit", "jobs", "--global-concurrency", "3", "--rate-limit", "10/s")
    assert text.startswith(
        "jobs: global concurrency from 2 (from settings) to 3 (set at run time); "
        "rate limit from 5/m (from settings) to 10/s (set at run time)\n"
    )
    assert "global concurrency 3 (set at run time (settings: 2))" in text
    assert state().effective == FlowLimits(3, Rate(10, 1000))
    assert state().changes[0]["who"] == f"{getpass.getuser()} (manage.py jobq_queues)"

    command_output("jobq_queues", "set-limit", "jobs", "--no-global-concurrency", "--no-rate-limit")
    assert state().effective == FlowLimits(0, None)
    assert state().overridden == {"global_concurrency", "rate_limit"}

    text = command_output("jobq_queues", "reset-limit", "jobs")
    assert text.startswith("jobs: global concurrency from none (set at run time) to 2 (from settings)")
    assert state().effective == limited.limits and state().overridden == frozenset()
    assert command_output("jobq_queues", "reset-limit", "jobs") == (
        "jobs: nothing to reset, the limits follow the settings\n"
    )
    assert len(state().changes) == 3  # nothing recorded for it


def test_jobq_queues_records_a_change_when_the_login_name_is_unknown(monkeypatch):
    def no_login() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_login)
    command_output("jobq_queues", "set-limit", "jobs", "--global-concurrency", "1")
    assert state().changes[0]["who"] == "unknown user (manage.py jobq_queues)"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("set-limit", "nope", "--global-concurrency", "1"), "unknown queue 'nope'"),
        (("reset-limit", "nope"), "unknown queue 'nope'"),
        (("set-limit", "jobs", "--global-concurrency", "-1"), "whole number of jobs"),
        (("set-limit", "jobs", "--global-concurrency", "lots"), "whole number of jobs"),
        (("set-limit", "jobs", "--rate-limit", "ten per second"), "a rate limit is a string like '10/s'"),
        (("set-limit", "jobs", "--rate-limit", ""), "--rate-limit needs a rate"),
        (("set-limit", "jobs", "--rate-limit", "1/s", "--no-rate-limit"), "not both"),
        (("set-limit", "jobs"), "set-limit needs --global-concurrency"),
        (("set-limit", "--global-concurrency", "1"), "set-limit needs the name of a queue"),
        (("list", "--rate-limit", "1/s"), "--rate-limit go(es) with set-limit, not list"),
        (("list", "nope"), "unknown queue 'nope'"),
    ],
)
def test_jobq_queues_refuses_what_it_cannot_do_and_changes_nothing(r, args, said):
    with pytest.raises(CommandError) as refused:
        command_output("jobq_queues", *args)
    assert said in str(refused.value)
    assert not r.exists(get_queue("jobs").keys.limits)
