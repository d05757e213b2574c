"""The admin against whatever Redis holds: any payload under the payload limit
costs its page a bounded amount of work, and corrupt data (nested too deeply,
IDs no URL can carry, counters that are not numbers, garbage in a job hash)
shows as what it is, marked, never as a 500.

Work is measured, never timed: the memory a rendering allocates
(tracemalloc), and the size of what it shows."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from django.template import Context, Template
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_jobqueue import InvalidJobOptions, get_queue
from django_jobqueue.engine.ids import JOB_ID_RULE, new_job_id
from django_jobqueue.engine.keys import GlobalKeys, QueueKeys
from django_jobqueue.templatetags.jobqueue_admin import PRETTY_LIMIT, json_preview, pretty_json
from tests.helpers.admin import HOSTILE, OVERVIEW, body, url
from tests.helpers.redis_data import register_worker

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
KEYS = QueueKeys("queue", "jobs")
# What the page adds to a cut value: the note saying where it was cut.
NOTE_ROOM = 200


def peak_bytes(work: Callable[[], Any]) -> tuple[Any, int]:
    """What ``work`` returns, and the most memory it held at once."""
    tracemalloc.start()
    try:
        result = work()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def nested(depth: int, inner: list[Any]) -> Any:
    value: Any = inner
    for _ in range(depth):
        value = [value]
    return value


def near_the_limit(depth: int, item: Any) -> Any:
    """``item`` repeated inside ``depth`` lists, as many times as fit under the
    default MAX_PAYLOAD_BYTES."""
    room = get_queue("jobs").max_payload_bytes - 2 * depth - 100
    return nested(depth, [item] * (room // (len(json.dumps(item)) + 1)))


def shown_in_pre(html: str, heading: str) -> str:
    """The text of the <pre> under ``heading`` on a job page."""
    start = html.index(f"<h2>{heading}</h2>")
    start = html.index(">", html.index("<pre", start)) + 1
    return html[start : html.index("</pre>", start)]


def rendered(value: Any) -> str:
    """pretty_json as a template shows it: autoescaped."""
    return Template("{% load jobqueue_admin %}{{ value|pretty_json }}").render(Context({"value": value}))


# ------------------------------------------------- item 1: bounded rendering

# Payloads under the limit that once cost a page time and memory growing with
# their depth times their size (450 levels of 1 MB: 10 s and +941 MiB a view).
SHAPES = {
    "deep and wide": lambda: near_the_limit(450, 0),
    "wide": lambda: near_the_limit(0, 0),
    "deep and wide, of objects": lambda: near_the_limit(300, {"k": [1, {"x": None}]}),
    "one long string": lambda: "<" * (MiB - 100),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_rendering_a_payload_near_the_limit_holds_a_few_megabytes_at_most(shape):
    text = json.dumps(SHAPES[shape](), separators=(",", ":"))
    assert len(text) <= MiB
    shown, peak = peak_bytes(lambda: pretty_json(text))
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB to render {shape}"
    assert len(shown) <= PRETTY_LIMIT + NOTE_ROOM and "cut at 100,000 characters" in shown


def test_the_job_page_of_a_deeply_nested_payload_near_the_limit_is_cheap(viewer):
    queue = get_queue("jobs")
    payload = near_the_limit(450, 0)
    job_id = queue.enqueue(payload, name="deep")
    queue.complete(queue.claim_nowait("w"), payload)  # a result goes through the same rendering

    response, peak = peak_bytes(lambda: viewer.get(url("job", "jobs", job_id)))

    assert response.status_code == 200
    page = body(response)
    for part in ("Payload", "Result"):
        assert len(shown_in_pre(page, part)) <= 2 * PRETTY_LIMIT  # escaped: a few characters grow
    assert len(page) < 4 * PRETTY_LIMIT
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB for one view"


def test_json_deeper_than_python_recursion_shows_without_error():
    deep = "[" * 200_000 + "]" * 200_000
    shown = pretty_json(deep)
    assert shown.startswith("[\n  [\n    [") and len(shown) <= PRETTY_LIMIT + NOTE_ROOM

    value: list[Any] = []
    for _ in range(200_000):
        value = [value]
    assert json_preview(value, 50).startswith("[" * 50)


def test_stored_json_is_indented_like_json_dumps():
    value = {"name": "Zoë <b>", "n": [1, 2.5, -3e-07, True, None], "empty": {}, "none": [], "q": 'say "hi"\n'}
    stored = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert pretty_json(stored) == json.dumps(value, indent=2, ensure_ascii=False)
    assert pretty_json("not {json") == "not {json"
    assert pretty_json('{"a": 1} trailing') == '{"a": 1} trailing'
    assert pretty_json(None) == ""


# -------------------------------------------------- item 6: corrupt data


def test_an_error_log_nested_too_deeply_is_marked_and_the_rest_of_the_job_shown(r, viewer):
    job_id = get_queue("jobs").enqueue({"n": 1}, name="add")
    r.hset(KEYS.job(job_id), mapping={"errors": "[" * 100_000 + "]" * 100_000, "last_error": "boom"})

    response = viewer.get(url("job", "jobs", job_id))

    assert response.status_code == 200
    page = body(response)
    assert "unreadable entry:</span> the error log is nested too deeply to read" in page
    assert "&quot;n&quot;: 1" in page and "Last error:</strong> boom" in page


def test_error_log_entries_that_are_not_entries_are_marked(r, viewer):
    job_id = get_queue("jobs").enqueue({"n": 1}, name="add")
    deep = nested(800, [])
    log = [{"attempt": 1, "error": "first", "ts_ms": 1}, 7, {"attempt": [1], "error": deep, "ts_ms": "x"}]
    r.hset(KEYS.job(job_id), "errors", json.dumps(log))

    page = body(viewer.get(url("job", "jobs", job_id)))

    assert '<td class="jq-error">first</td>' in page
    assert "unreadable entry:</span> not an entry: 7" in page
    assert "unreadable entry:</span> [[[[" in page


def test_a_worker_record_nested_too_deeply_is_marked_and_the_rest_shown(r, viewer):
    register_worker(r, "w-deep", [], jobs="[" * 100_000 + "]" * 100_000, queues="not json")
    register_worker(r, "w-fine", [["jobs", new_job_id(), "token"]])

    for response in (viewer.get(OVERVIEW), viewer.get(url("overview_json"))):
        assert response.status_code == 200
        page = body(response)
        assert "w-deep" in page and "box-1" in page and "w-fine" in page
        assert "jobs: nested too deeply to read" in page and "queues: not JSON" in page


def test_the_engine_reads_of_records_nested_too_deeply_give_what_they_can(r):
    # What jobq_stats and the monitor read, outside the admin's own guards.
    from django_jobqueue.engine import browse

    register_worker(r, "w-deep", [], jobs="[" * 100_000 + "]" * 100_000)
    (worker,) = browse.workers(r, GlobalKeys("queue"))
    assert worker["id"] == "w-deep" and worker["jobs"] == []
    assert browse.decode_errors("[" * 100_000 + "]" * 100_000) == [{"error": "[" * 100_000 + "]" * 100_000}]


def test_a_list_id_no_url_can_carry_is_shown_unlinked_and_marked(r, manager):
    fine = get_queue("jobs").enqueue({"n": 1}, name="add")
    for bad in ("a/b", "..", "x" * 5000):
        r.rpush(KEYS.pending, bad)

    response = manager.get(url("list", "jobs", "pending"))

    assert response.status_code == 200
    page = body(response)
    assert f'<a href="{url("job", "jobs", fine)}">' in page
    assert '<code>a/b</code> <span class="jq-error jq-broken"' in page
    assert '<code>..</code> <span class="jq-error jq-broken"' in page
    assert "x" * 5000 not in page and page.count("not a valid job ID") == 3


def test_a_running_job_id_no_url_can_carry_is_shown_unlinked(r, viewer):
    register_worker(r, "w-slash", [["jobs", "a/b", "t"], "not an entry"])

    response = viewer.get(OVERVIEW)

    assert response.status_code == 200
    page = body(response)
    assert "<code>jobs/a/b</code>" in page and "jobs: not [queue, id, token]: &quot;not an entry&quot;" in page


def test_a_counter_that_is_not_a_number_is_marked_and_the_rest_shown(r, viewer):
    queue = get_queue("jobs")
    queue.enqueue({"n": 1}, name="add")
    r.hset(KEYS.stats, "completed", "lots")

    overview = viewer.get(OVERVIEW)
    refresh = viewer.get(url("overview_json"))
    listing = viewer.get(url("list", "jobs", "pending"))
    summary = viewer.get(url("summary_json", "jobs"))

    assert [p.status_code for p in (overview, refresh, listing, summary)] == [200] * 4
    page = body(overview)
    assert f'href="{url("list", "jobs", "pending")}" data-depth="pending">1<' in page
    assert "counter &#x27;completed&#x27; holds &#x27;lots&#x27;, not a number" in page
    assert '<span class="jq-error jq-broken" title="this counter holds something that is not a number">' in page
    assert ">enqueued<" in page  # the counters that are numbers are still shown
    assert "Unreadable in Redis: counter" in body(listing)
    assert r.llen(KEYS.stats_samples) == 0  # no throughput sample from counters it cannot read


def test_a_job_hash_whose_fields_are_garbage_still_opens(r, viewer):
    job_id = new_job_id()
    r.hset(
        KEYS.job(job_id),
        mapping={"id": "a/b", "status": "processing", "completed_at_ms": "²", "lease_until_ms": "9" * 5000},
    )

    response = viewer.get(url("job", "jobs", job_id))

    assert response.status_code == 200
    page = body(response)
    assert "its hash says <code>a/b</code>" in page
    assert url("job_json", "jobs", job_id) in page
    assert '<th scope="row">completed_at_ms</th><td><code>²</code>' in page


def test_search_for_an_id_no_url_can_carry_finds_it_without_a_link(r, viewer):
    r.hset(KEYS.job("a/b"), mapping={"id": "a/b", "status": "pending"})
    response = viewer.get(url("search"), {"q": "a/b"})
    assert response.status_code == 200 and "no job page can be opened for this ID" in body(response)


# --------------------------------------------- item 6: IDs checked on entry


@pytest.mark.parametrize("bad", ["a/b", "", ".", "..", "-x", "a b", "order:5", "é", "x" * 101, 5])
def test_enqueue_refuses_a_job_id_outside_the_rule_and_writes_nothing(r, bad):
    queue = get_queue("jobs")
    with pytest.raises(InvalidJobOptions, match="is not a valid job ID: use 1 to 100 characters") as caught:
        queue.enqueue({}, job_id=bad)
    assert isinstance(caught.value, ValueError) and JOB_ID_RULE in str(caught.value)
    assert r.keys("*") == []


# Named ids: a generated id as the test's name would differ between pytest-xdist's workers.
@pytest.mark.parametrize(
    "good",
    ["order-5", "A.b_c-9", "7", "x" * 100, new_job_id()],
    ids=["dashes", "dots", "digit", "longest", "generated"],
)
def test_enqueue_takes_a_job_id_inside_the_rule(good):
    queue = get_queue("jobs")
    assert queue.enqueue({}, job_id=good) == good


# ------------------------------------------------------------------- fuzz

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.sampled_from(HOSTILE), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, depth=st.integers(0, 3000), copies=st.integers(1, 20_000))
@example(value=0, depth=450, copies=400_000)
@example(value="<" * 1000, depth=0, copies=1000)
def test_any_json_under_the_payload_limit_renders_bounded_and_escaped(value, depth, copies):
    item = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    copies = max(1, min(copies, (MiB - 2 * depth - 2) // (len(item.encode()) + 1)))
    stored = "[" * (depth + 1) + ",".join([item] * copies) + "]" * (depth + 1)

    html, peak = peak_bytes(lambda: rendered(stored))

    assert len(html) <= 6 * PRETTY_LIMIT  # escaping turns one character into at most six
    assert "<" not in html and ">" not in html
    assert peak < 8 * MiB
    if len(stored) * (depth + 1) < 200_000:  # indenting it whole is cheap: compare
        whole = json.dumps(json.loads(stored), indent=2, ensure_ascii=False)
        shown = pretty_json(stored)
        assert shown == whole if len(whole) <= PRETTY_LIMIT else shown.startswith(whole[:PRETTY_LIMIT])


JOB_FIELDS = [
    "id", "name", "queue", "status", "attempts", "max_attempts", "payload", "result", "errors",
    "last_error", "last_traceback", "worker", "delivery", "claim_token", "started",
    "enqueued_at_ms", "completed_at_ms", "lease_until_ms", "unique_key",
]  # fmt: skip
garbage_text = (
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
    | st.sampled_from([*HOSTILE, "²", "9" * 5000, "-1", "1e400", "a/b", "..", "", "[" * 5000, "[[[", "{}"])
    | st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 50_000))
    | json_values.map(json.dumps)
    | st.lists(json_values, max_size=4).map(json.dumps)
)
garbage_values = garbage_text | st.binary(max_size=20)
garbage_hashes = st.dictionaries(
    st.sampled_from(JOB_FIELDS) | st.text(max_size=20), garbage_values, min_size=1, max_size=12
)


def test_any_garbage_in_a_job_hash_renders_its_pages(r, viewer):
    job_id = new_job_id()
    r.rpush(KEYS.pending, job_id)

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fields=garbage_hashes)
    @example(fields={"errors": "[" * 100_000 + "]" * 100_000})
    @example(fields={"id": "a/b", "completed_at_ms": "²", "status": "processing"})
    def check(fields: dict[str, Any]) -> None:
        r.delete(KEYS.job(job_id))
        r.hset(KEYS.job(job_id), mapping=fields)
        queue = fields.get("queue", "jobs")
        served = 200 if queue in ("jobs", b"jobs") else 404  # another queue's job is not read here
        for page in (url("job", "jobs", job_id), url("job_json", "jobs", job_id)):
            response = viewer.get(page)
            assert response.status_code == served, page
            assert "<script>alert" not in body(response) and "<img src=x" not in body(response)
        assert viewer.get(url("list", "jobs", "pending")).status_code == 200

    check()


def test_the_worker_and_stats_keys_with_garbage_render_the_overview(r, viewer):
    keys = GlobalKeys("queue")

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        record=st.dictionaries(st.sampled_from(["queues", "jobs", "host", "started_at_ms"]), garbage_values),
        counter=garbage_values,
    )
    def check(record: dict[str, Any], counter: Any) -> None:
        r.delete(keys.worker("w"), KEYS.stats)
        r.zadd(keys.workers, {"w": 1})
        if record:
            r.hset(keys.worker("w"), mapping=record)
        r.hset(KEYS.stats, "completed", counter)
        response = viewer.get(OVERVIEW)
        assert response.status_code == 200
        assert "<script>alert" not in body(response) and "<img src=x" not in body(response)

    check()
