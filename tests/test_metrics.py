"""Prometheus metrics: the view (django_jobqueue.metrics.view, behind
JOBQUEUE["METRICS"]) and the standalone exporter (manage.py jobq_metrics), read
with prometheus-client's own parser against a real Redis."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import path
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from django_jobqueue import enqueue, enqueue_many, get_queue, metrics
from django_jobqueue.checks import check_settings
from django_jobqueue.conf import validate
from django_jobqueue.exceptions import ConfigurationError
from django_jobqueue.worker.presence import Presence
from tests.helpers.paths import ROOT
from tests.helpers.workers import drain, stop, worker_env

# The view, mounted as a project would: path("metrics", metrics.view) in urls.py.
urlpatterns = [path("metrics", metrics.view)]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

TOKEN = "s3cret-token-of-32-characters-xx"
DOCS = ROOT / "docs" / "observability.md"


# ------------------------------------------------------------------ reading


def parsed(text: str) -> dict[str, Metric]:
    """The page's families by name, read by prometheus-client's parser (which raises on bad text)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The value of the one sample named ``sample`` with these labels (among others)."""
    found = [
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{len(found)} samples {sample}{labels}"
    return found[0]


def scrape(client: Client, **extra: Any) -> dict[str, Metric]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parsed(response.content.decode())


@pytest.fixture
def staff(viewer: Client) -> Client:
    """A client signed in as staff (the default AUTH)."""
    return viewer


# ------------------------------------------------------- what the page says


def test_the_page_carries_the_queues_state(staff, r):
    for n in range(3):
        enqueue("add", {"a": n, "b": 1})
    enqueue("boom", {})  # max_attempts=2: retried once, then dead-lettered
    drain("jobs")  # a real worker: the counters, and the samples of its five runs
    waiting = [enqueue("add", {"a": 1, "b": 1}) for _ in range(2)]
    enqueue("add", {"a": 1, "b": 1}, delay=600)
    # The oldest pending job was enqueued a minute ago (by the Redis server's clock).
    now_ms = int(r.time()[0]) * 1000
    r.hset(f"queue:jobs:job:{waiting[0]}", "enqueued_at_ms", now_ms - 60_000)
    get_queue("low").pause("in")

    families = scrape(staff)

    assert value(families, "jobq_up") == 1
    depths = {s: value(families, "jobq_jobs", queue="jobs", state=s) for s in metrics_states()}
    assert depths == {"pending": 2, "processing": 0, "scheduled": 1, "completed": 3, "failed": 1}
    assert value(families, "jobq_jobs", queue="high", state="pending") == 0
    assert value(families, "jobq_jobs_enqueued_total", queue="jobs") == 7
    assert value(families, "jobq_jobs_processed_total", queue="jobs", outcome="completed") == 3
    assert value(families, "jobq_jobs_processed_total", queue="jobs", outcome="failed") == 1
    assert value(families, "jobq_jobs_processed_total", queue="jobs", outcome="expired") == 0
    assert value(families, "jobq_job_events_total", queue="jobs", event="retried") == 1
    assert 60 <= value(families, "jobq_oldest_pending_age_seconds", queue="jobs") < 120
    assert value(families, "jobq_oldest_pending_age_seconds", queue="high") == 0
    assert value(families, "jobq_queue_paused", queue="low", direction="in") == 1
    assert value(families, "jobq_queue_paused", queue="low", direction="out") == 0
    assert value(families, "jobq_queue_paused", queue="jobs", direction="in") == 0
    # Five runs: three adds, two attempts of boom; each waited and ran for some time.
    for histogram in ("jobq_job_duration_seconds", "jobq_job_latency_seconds"):
        assert families[histogram].type == "histogram"
        assert value(families, f"{histogram}_count", queue="jobs") == 5
        assert value(families, f"{histogram}_bucket", queue="jobs", le="+Inf") == 5
        assert value(families, f"{histogram}_sum", queue="jobs") >= 0
        assert value(families, f"{histogram}_count", queue="high") == 0
    assert families["jobq_jobs_processed"].type == "counter"
    assert families["jobq_jobs"].type == "gauge"


def metrics_states() -> tuple[str, ...]:
    return ("pending", "processing", "scheduled", "completed", "failed")


def test_histogram_buckets_are_cumulative(staff, r):
    # Two runs noted by hand in the samples hash: one of 0.2 s, one of 20 s.
    hist = get_queue("jobs").keys.samples_hist
    from django_jobqueue.engine.samples import BOUNDS_S, bucket_index

    r.hset(hist, mapping={f"h:d{bucket_index(0.2)}": 1, f"h:d{bucket_index(20)}": 1, "h:dsum_us": 20_200_000})
    families = scrape(staff)

    def bucket(le: float) -> float:
        return value(families, "jobq_job_duration_seconds_bucket", queue="jobs", le=repr(le))

    assert bucket(0.1) == 0
    assert bucket(0.25) == 1
    assert bucket(10.0) == 1
    assert bucket(30.0) == 2
    assert bucket(BOUNDS_S[-1]) == 2
    assert value(families, "jobq_job_duration_seconds_sum", queue="jobs") == pytest.approx(20.2)


def test_a_scraper_asking_for_openmetrics_gets_it(staff):
    enqueue("add", {"a": 1, "b": 1})
    response = staff.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(response.content.decode())}
    assert value(families, "jobq_jobs", queue="jobs", state="pending") == 1
    assert value(families, "jobq_jobs_enqueued_total", queue="jobs") == 1


def test_live_workers_and_their_runner_threads_per_queue(staff, r):
    both = Presence("w-both", [get_queue("high"), get_queue("low")], 3, lambda: "[]")
    high = Presence("w-high", [get_queue("high")], 2, lambda: "[]")
    lapsed = Presence("w-lapsed", [get_queue("high")], 5, lambda: "[]")
    for worker in (both, high, lapsed):
        worker.register()
    # Its heartbeat an hour old: past WORKER_TIMEOUT_SECONDS, it counts nowhere.
    r.zadd("queue:workers", {"w-lapsed": (int(r.time()[0]) - 3600) * 1000})

    families = scrape(staff)

    assert value(families, "jobq_live_workers") == 2
    assert value(families, "jobq_workers_alive", queue="high") == 2
    assert value(families, "jobq_workers_alive", queue="low") == 1
    assert value(families, "jobq_workers_alive", queue="jobs") == 0
    assert value(families, "jobq_worker_concurrency", queue="high") == 5
    assert value(families, "jobq_worker_concurrency", queue="low") == 3


def test_a_counter_written_by_hand_neither_breaks_the_page_nor_adds_series(staff, r):
    r.hset("queue:jobs:stats", mapping={"completed": "many", "made-up": 7, "failed": 2})
    families = scrape(staff)
    assert value(families, "jobq_jobs_processed_total", queue="jobs", outcome="failed") == 2
    assert value(families, "jobq_jobs_processed_total", queue="jobs", outcome="completed") == 0
    assert "made-up" not in str([s.labels for f in families.values() for s in f.samples])


def test_samples_or_counters_written_by_hand_never_blind_the_other_queues(staff, r):
    r.set("queue:jobs:samples:hist", "written by hand")  # another type
    r.hset("queue:fast:stats", mapping={"completed": "9" * 400, "failed": 3})  # past what a float holds
    families = scrape(staff)
    assert value(families, "jobq_up") == 1
    assert value(families, "jobq_jobs_processed_total", queue="fast", outcome="completed") == 0
    assert value(families, "jobq_jobs_processed_total", queue="fast", outcome="failed") == 3
    assert value(families, "jobq_job_duration_seconds_count", queue="fast") == 0
    assert not [s for s in families["jobq_job_duration_seconds"].samples if s.labels["queue"] == "jobs"]


def test_the_oldest_pending_age_counts_from_when_the_job_was_due(staff, r):
    job_id = enqueue("add", {"a": 1, "b": 1})
    seconds, _micros = r.time()
    now_ms = int(seconds) * 1000
    r.hset(f"queue:jobs:job:{job_id}", mapping={"enqueued_at_ms": now_ms - 3_600_000, "run_at_ms": now_ms - 2000})
    age = value(scrape(staff), "jobq_oldest_pending_age_seconds", queue="jobs")
    assert 1 <= age < 60  # due 2 s ago, though enqueued an hour ago (a delay)


def test_every_metric_served_is_in_the_docs_and_every_documented_one_is_served(staff):
    served = set()
    for family in scrape(staff).values():
        served.add(family.name + ("_total" if family.type == "counter" else ""))
    section = DOCS.read_text().split("\n## Prometheus metrics\n")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `(jobq_[a-z_]+)", section, re.M))
    assert served == documented


def test_the_grafana_dashboard_is_json_and_queries_only_metrics_that_exist(staff):
    served = {family.name for family in scrape(staff).values()}
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {re.sub(r"_(total|bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"jobq_\w+", e)}
    assert len(exprs) >= 8 and queried <= served, queried - served
    assert "grafana-dashboard.json" in DOCS.read_text()


# ------------------------------------------------------ bounded Redis calls


def commands_during(port: int, block: Callable[[], Any]) -> list[str]:
    """The names of the commands Redis received from other clients while ``block`` ran (MONITOR)."""
    client = redis.Redis(port=port, decode_responses=True)
    marker = redis.Redis(port=port, decode_responses=True)
    marker.ping()  # connected (HELLO and all) before the count starts
    names = []
    try:
        with client.monitor() as monitor:  # on (its OK read) before the block runs
            block()
            marker.echo("end of the block")
            while True:
                line = monitor.connection.read_response()
                if "end of the block" in line:
                    break
                if "[0 lua]" not in line:
                    names.append(re.findall(r'"((?:[^"\\]|\\.)*)"', line)[0].upper())
    finally:
        client.close()
        marker.close()
    return names


def test_a_scrape_costs_the_same_redis_calls_for_10_or_1000_jobs(staff, redis_server):
    enqueue_many("add", [{"a": n, "b": 1} for n in range(10)])
    scrape(staff)  # the connection's own setup (HELLO, CLIENT SETINFO) out of the count
    few = commands_during(redis_server.port, lambda: scrape(staff))
    enqueue_many("add", [{"a": n, "b": 1} for n in range(990)])
    many = commands_during(redis_server.port, lambda: scrape(staff))

    assert sorted(few) == sorted(many)
    assert "LRANGE" not in many and "SCAN" not in many and "KEYS" not in many
    # Four queues: per queue 9 counts, the oldest job's HGET and the histograms' HGETALL;
    # once: TIME and the workers (ZCOUNT, ZREVRANGEBYSCORE).
    assert len(many) == 3 + 4 * 9 + 1 + 4, " ".join(many)


# ------------------------------------------------------------------ access


def test_by_default_only_a_staff_session_reads_the_metrics(client, staff, django_user_model):
    assert client.get("/metrics").status_code == 403
    member = django_user_model.objects.create_user("member", password="pw", is_staff=False)
    client.force_login(member)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"staff session" in response.content
    assert staff.get("/metrics").status_code == 200
    assert staff.post("/metrics").status_code == 405


def test_a_bearer_token(client, staff, jobq_settings):
    jobq_settings(METRICS={"AUTH": "token", "TOKEN": TOKEN})
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer é").status_code == 401
    assert staff.get("/metrics").status_code == 401  # a session is not what this setting asks for
    assert value(scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"), "jobq_up") == 1


@pytest.mark.parametrize(
    ("address", "status"),
    [("10.1.2.3", 200), ("192.168.0.9", 403), ("::ffff:10.9.9.9", 200), ("2001:db8::1", 200), ("2001:db9::1", 403)],
)
def test_a_list_of_addresses_and_networks(client, jobq_settings, address, status):
    jobq_settings(METRICS={"AUTH": "ips", "ALLOWED_IPS": ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]})
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == status


def test_several_checks_must_all_pass(client, jobq_settings):
    jobq_settings(METRICS={"AUTH": ["ips", "token"], "TOKEN": TOKEN, "ALLOWED_IPS": ["10.0.0.0/8"]})
    bearer = f"Bearer {TOKEN}"
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="172.16.0.1", HTTP_AUTHORIZATION=bearer).status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1", HTTP_AUTHORIZATION=bearer).status_code == 200


def test_none_lets_everybody_in(client, jobq_settings):
    jobq_settings(METRICS={"AUTH": "none"})
    assert client.get("/metrics").status_code == 200


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("metrics_setting", "problem"),
    [
        ({"AUTH": "admin"}, 'JOBQUEUE[\'METRICS\'][\'AUTH\'] must be "staff", "token", "ips", "none"'),
        ({"AUTH": ["token", "none"]}, "JOBQUEUE['METRICS']['AUTH'] must be"),
        ({"AUTH": []}, "JOBQUEUE['METRICS']['AUTH'] must be"),
        ({"AUTH": "token"}, "JOBQUEUE['METRICS']['TOKEN'] must be set when AUTH includes \"token\""),
        ({"AUTH": "token", "TOKEN": "short"}, "JOBQUEUE['METRICS']['TOKEN'] must be None or at least 16 printable"),
        ({"AUTH": "ips"}, "JOBQUEUE['METRICS']['ALLOWED_IPS'] must list at least one address"),
        ({"ALLOWED_IPS": ["10.0.0.300"]}, "JOBQUEUE['METRICS']['ALLOWED_IPS'] holds '10.0.0.300', which is not"),
        ({"ALLOWED_IPS": "10.0.0.1"}, "JOBQUEUE['METRICS']['ALLOWED_IPS'] must be a list"),
        ({"TOKNE": TOKEN}, "JOBQUEUE['METRICS']['TOKNE'] is not a known metrics setting (did you mean 'TOKEN'?)"),
        ("staff", "JOBQUEUE['METRICS'] must be a dict, got a str"),
    ],
)
def test_a_wrong_metrics_setting_is_named(metrics_setting, problem):
    settings, errors = validate({"METRICS": metrics_setting})
    assert settings is None
    assert any(f"{path} {text}".startswith(problem) for path, text in errors), errors


def test_the_token_is_never_quoted_in_a_settings_error(settings):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "METRICS": {"AUTH": "token", "TOKEN": "s3cret é token value!"}}
    messages = [error.msg for error in check_settings()]
    assert messages and all("s3cret" not in m for m in messages)
    assert any("JOBQUEUE['METRICS']['TOKEN']" in m for m in messages)


def test_the_settings_carry_the_checks():
    settings, errors = validate({"METRICS": {"AUTH": ["token", "ips"], "TOKEN": TOKEN, "ALLOWED_IPS": ["10.1.2.3/8"]}})
    assert errors == [] and settings is not None
    assert settings.metrics.auth == ("token", "ips")
    assert [str(n) for n in settings.metrics.allowed_ips] == ["10.0.0.0/8"]
    assert TOKEN not in repr(settings)
    default, _ = validate({})
    assert default is not None and default.metrics.auth == ("staff",)


# --------------------------------------------------- Redis down, no library


def test_the_view_answers_503_while_redis_cannot_be_read(staff, jobq_settings):
    jobq_settings(REDIS_URL="redis://:hunter2-password@127.0.0.1:1/0")
    response = staff.get("/metrics")
    assert response.status_code == 503
    text = response.content.decode()
    assert text.startswith("jobq metrics: Redis could not be read: ")
    assert "hunter2" not in text


@pytest.fixture
def without_prometheus_client(monkeypatch) -> Iterator[None]:
    """Importing prometheus_client (or any of its modules) fails, as when it is not installed."""
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_client.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    yield


def test_without_prometheus_client_the_view_says_how_to_install_it(staff, without_prometheus_client):
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'django-jobqueue[prometheus]'")):
        staff.get("/metrics")


def test_without_prometheus_client_the_command_says_how_to_install_it(without_prometheus_client):
    with pytest.raises(CommandError, match=re.escape("pip install 'django-jobqueue[prometheus]'")):
        call_command("jobq_metrics", "--port", "0")


# ----------------------------------------------------- the standalone exporter


def start_exporter(redis_url: str) -> tuple[subprocess.Popen[str], str]:
    """``manage.py jobq_metrics`` on a free port (0: the system picks); the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "jobq_metrics", "--port", "0"],
        env=worker_env(redis_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
    if found is None:
        proc.kill()
        raise AssertionError(f"no address: {line!r} {proc.communicate(timeout=10)}")
    return proc, found.group(1)


def fetch(url: str) -> dict[str, Metric]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own exporter
        assert response.status == 200
        return parsed(response.read().decode())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_exporter_serves_the_metrics_until_told_to_stop(redis_server, sig):
    enqueue_many("add", [{"a": n, "b": 1} for n in range(4)])
    proc, url = start_exporter(redis_server.url)
    try:
        families = fetch(url)
        assert value(families, "jobq_up") == 1
        assert value(families, "jobq_jobs", queue="jobs", state="pending") == 4
        enqueue("add", {"a": 1, "b": 1})
        assert value(fetch(url), "jobq_jobs", queue="jobs", state="pending") == 5  # read at each scrape
    finally:
        code, out, err = stop(proc, sig)
    assert code == 0, err
    assert out.strip().endswith("stopped")


def test_the_exporter_reports_jobq_up_0_while_redis_is_down():
    proc, url = start_exporter("redis://127.0.0.1:1/0")
    try:
        families = fetch(url)
        assert value(families, "jobq_up") == 0
        assert families["jobq_jobs"].samples == []
        assert value(fetch(url), "jobq_up") == 0  # still answering
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert err.count("Redis could not be read") == 1  # said once, not at every scrape
