"""The admin's charts (charts.py): drawn from what real workers recorded,
refreshed with the overview's live parts, escaped, and honest about gaps."""

from __future__ import annotations

import re

import pytest

from django_jobqueue import enqueue, get_queue
from django_jobqueue.charts import Line, line_chart, nice_ceiling, queue_charts
from django_jobqueue.engine import samples
from django_jobqueue.engine.browse import server_time_ms
from tests.helpers.admin import OVERVIEW, body
from tests.helpers.workers import drain

pytestmark = pytest.mark.django_db

CHART = re.compile(r'<svg class="jq-chart"[^>]*aria-label="([^"]*)" data-points="(\d+)"')


def charts_of(html: str, queue: str) -> dict[str, int]:
    """aria-label -> points drawn, of one queue's row of charts."""
    row = html.split(f'<div class="jq-chart-row" data-queue="{queue}">', 1)[1].split("</div>", 1)[0]
    return {label: int(points) for label, points in CHART.findall(row)}


def test_the_overview_charts_what_a_worker_ran(r, viewer):
    for i in range(5):
        enqueue("add", {"a": i, "b": 1})
    enqueue("boom", {})
    drain()

    page = body(viewer.get(OVERVIEW))
    charts = charts_of(page, "jobs")
    rates = "jobs completed and failed per second, one point per 10 s"
    assert set(charts) == {
        rates,
        "pending jobs, one point per 10 s",
        "enqueue-to-start latency p50 and p95, one point per 10 s",
    }
    assert charts[rates] == 0  # the runs' bucket is still filling: no rate yet
    assert all(points >= 1 for label, points in charts.items() if label != rates)
    assert "no samples yet" in page.split('data-queue="fast"', 1)[1]  # nothing ran there

    # Runs of a bucket that has ended (a worker's, 30 s ago): their rates are drawn.
    book = samples.SampleBook()
    for completed in (True, True, False):
        book.ran("jobs", completed=completed, duration_s=0.1, latency_s=0.01, at_ms=server_time_ms(r) - 30_000)
    samples.SampleSender("w9", [("jobs", get_queue("jobs").keys)]).flush(r, book)
    page = body(viewer.get(OVERVIEW))
    assert charts_of(page, "jobs")[rates] >= 2
    assert 'class="jq-line jq-line-completed"' in page
    assert 'class="jq-line jq-line-failed"' in page


def test_samples_that_are_not_counts_are_left_out_and_said_so(r, viewer):
    now_s = server_time_ms(r) // 1000
    keys = get_queue("jobs").keys
    r.set(keys.samples_bucket(10, now_s - now_s % 10 - 30), "written by hand")
    r.hset(keys.samples_bucket(10, now_s - now_s % 10 - 60), mapping={"c": "9" * 400, "pending": "-3"})
    response = viewer.get(OVERVIEW)
    assert response.status_code == 200
    assert "some samples in Redis are not what the workers write: left out" in body(response)


def test_the_live_refresh_sends_the_charts_over_the_chosen_span(viewer):
    enqueue("add", {"a": 1, "b": 1})
    drain()
    client = viewer

    page = body(client.get(OVERVIEW + "?span=24h"))
    assert 'data-jq-poll="/admin/django_jobqueue/jobqueue/overview.json?span=24h"' in page
    parts = client.get(OVERVIEW + "overview.json?span=24h").json()["parts"]
    assert charts_of(parts["charts"], "jobs")["pending jobs, one point per 5 min"] >= 1
    assert "one point per 10 s" in client.get(OVERVIEW + "overview.json?span=7y").json()["parts"]["charts"]


def test_a_chart_escapes_its_text_and_breaks_its_line_at_gaps():
    svg = line_chart(
        "<b>title</b>",
        [Line("<i>x</i>", "completed", [1.0, None, 2.0, 3.0])],
        span_label="60 min",
        unit=str,
        describe='say "hi"',
    )
    assert "<b>" not in svg and "&lt;b&gt;title&lt;/b&gt;" in svg
    assert "&lt;i&gt;x&lt;/i&gt;" in svg and 'aria-label="say &quot;hi&quot;"' in svg
    assert svg.count("<polyline") == 2  # one run before the gap, one after
    assert 'data-points="3"' in svg


def test_with_no_samples_a_chart_says_so():
    svg = line_chart("Pending", [Line("pending", "pending", [None] * 5)], span_label="60 min", unit=str, describe="d")
    assert "no samples yet" in svg and "<polyline" not in svg


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1.0), (0.3, 0.5), (1, 1), (1.2, 2), (2.2, 2.5), (7, 10), (140, 200), (0.004, 0.005)]
)
def test_the_axis_top_is_a_round_number_at_or_above_the_highest_point(value, top):
    assert nice_ceiling(value) == pytest.approx(top)


def hour_of_points(written_from: int) -> list[samples.Point]:
    """An hour of 10-s points, with samples in those from index ``written_from`` on."""
    return [
        samples.Point(i * 10, 3, 0, 1 if i >= written_from else None, 0, 0.1, 0.2)
        if i >= written_from
        else samples.Point(i * 10, 0, 0, None, None, None, None)
        for i in range(360)
    ]


@pytest.mark.parametrize(("written_from", "label"), [(358, "−5 min"), (60, "−50 min"), (0, "−60 min")])
def test_a_chart_starts_at_its_queues_first_sample_and_shows_five_minutes_at_least(written_from, label):
    rates = queue_charts(hour_of_points(written_from), "1h")[0]
    assert f">{label}</text>" in rates
    drawn = 2 * (360 - written_from)  # completed and failed, a point each per sample
    assert f'data-points="{drawn}"' in rates
