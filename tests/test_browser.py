"""The demo project in a real browser (headless Chromium, driven by Playwright).

It starts what `make demo` starts, against this test run's private Redis and a
temporary SQLite file: the demo project (testproject/, `runserver`) and a real
worker (`jobq_worker --queue jobs --queue payments`). Then, as a person would:
log in to the admin, start the demo's mock pool and enqueue a batch and watch
the counts move, fetch 20 rates with async jobs and see more run at once than
the worker has threads, queue a burst of payments on the limited queue and see at
most 2 run at once (and the admin show "2 of 2 slots in use"), sign up (a view
calling enqueue()) and watch that job complete in the admin, pause claiming on
the demo queue, open a failed job, press Retry and see it leave the failed list.
Screenshots of each step go to artifacts/browser/<timestamp>/ (printed), with
the server and worker logs.

Debian's Chromium is used (/usr/bin/chromium, or `chromium` on PATH);
Playwright never downloads a browser. Without either, the test is skipped.
Every wait is Playwright's own (bounded), never a sleep-and-assert.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from django_jobqueue.devserver import free_port
from tests.helpers.paths import PROJECT, ROOT

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the `test` extra installs it
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # the longest any single step may take
BATCH = 30
RATES = 20  # the demo page's "Fetch 20 rates (async)"
FAIL_RATE = "0.75"  # 3 attempts each: ~42% of the batch ends failed, the rest completed

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium: neither /usr/bin/chromium nor `chromium` on PATH (apt-get install chromium)",
    ),
    pytest.mark.timeout(120),
]


# ------------------------------------------------------------- processes


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (the worker lets running jobs
    finish), SIGKILL it if it is still there after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no output)"
    return f"--- {path.name} (last {lines} lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Demo:
    """The demo project (runserver) and a worker, on a free port, logging to ``out``."""

    def __init__(self, redis_url: str, tmp: Path, out: Path) -> None:
        self.out = out
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "DEMO_REDIS_URL": redis_url,
            "DEMO_DB": str(tmp / "demo.sqlite3"),
            "DEMO_SMTP_FAILURE_RATE": "0",  # the sign-up mail must complete, not retry by chance
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen] = []

    def manage(self, *args: str, log: str) -> subprocess.Popen:
        with (self.out / log).open("w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=PROJECT,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: _stop() reaches any child it has
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        setup = subprocess.run(
            # "--password=...": a generated password may start with "-".
            [sys.executable, "manage.py", "demo_setup", "--username", "admin", f"--password={self.password}"],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        # What `make demo` starts: 4 runners, more than the payments queue lets run at once.
        self.manage("jobq_worker", "--queue", "jobs", "--queue", "payments", "--concurrency", "4", log="worker.log")
        web = self.manage("runserver", f"127.0.0.1:{self.port}", "--noreload", log="server.log")
        deadline = time.monotonic() + 30
        while True:
            assert web.poll() is None, "runserver exited:\n" + _tail(self.out / "server.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, "runserver did not listen within 30 s:\n" + _tail(
                self.out / "server.log"
            )
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)

    def logs(self) -> str:
        return "\n".join(_tail(self.out / name) for name in ("server.log", "worker.log"))


@pytest.fixture
def artifacts(capsys) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = ROOT / "artifacts" / "browser" / f"{stamp}-{os.getpid()}"
    out.mkdir(parents=True)
    with capsys.disabled():
        print(f"\nbrowser test: screenshots and logs in {out}")
    return out


@pytest.fixture
def demo(redis_server, tmp_path, artifacts) -> Iterator[Demo]:
    running = Demo(redis_server.url, tmp_path, artifacts)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(demo, tmp_path):
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
        )
        try:
            tab = browser.pages[0] if browser.pages else browser.new_page()
            tab.set_default_timeout(WAIT_MS)
            yield tab
        finally:
            browser.close()


@contextlib.contextmanager
def explained_failure(page, demo: Demo, artifacts: Path, capsys) -> Iterator[None]:
    """On a failure: a screenshot of where the browser was, and the logs."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(artifacts / "failure.png"), full_page=True)
        with capsys.disabled():
            print(f"\nbrowser test failed at {page.url}; see {artifacts}/failure.png\n{demo.logs()}")
        raise


# ------------------------------------------------------------------ steps


def depth(page, queue: str, which: str) -> int:
    """A depth as the demo page shows it (0 before its first refresh)."""
    text = page.locator(f"#{queue}-{which}-depth .depth").text_content(timeout=WAIT_MS)
    return int(text or 0)


def wait_depth(page, queue: str, which: str, at_least: int) -> None:
    """Until the demo page's live refresh shows that depth (or WAIT_MS passes)."""
    page.wait_for_function(
        "([id, n]) => Number(document.querySelector(`#${id} .depth`)?.textContent ?? -1) >= n",
        arg=[f"{queue}-{which}-depth", at_least],
        timeout=WAIT_MS,
    )


def shot(page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_the_demo_and_the_admin_in_a_browser(demo, page, artifacts, capsys):
    with explained_failure(page, demo, artifacts, capsys):
        tour(page, demo, artifacts)


def tour(page, demo: Demo, artifacts: Path) -> None:
    admin = f"{demo.url}/admin/django_jobqueue/jobqueue"

    # Log in to the admin with the demo superuser.
    page.goto(f"{demo.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", demo.password)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{demo.url}/admin/")
    expect(page.locator(f'a[href="{admin.removeprefix(demo.url)}/"]').first).to_be_visible()

    # The demo page: start the mock pool, enqueue a batch, watch the counts move.
    page.goto(f"{demo.url}/")
    expect(page.locator("#demo-completed-depth")).to_be_visible()  # the first refresh came back
    completed_before = depth(page, "demo", "completed")
    pool = page.locator("#pool")
    pool.locator("[name=size]").fill("4")
    pool.locator("[name=latency_ms]").fill("100")
    pool.locator("[name=fail_rate]").fill(FAIL_RATE)
    pool.locator("[name=hang_rate]").fill("0")
    page.click("#pool-button")
    expect(page.locator("#pool-state")).to_have_text("pool: 4 worker(s)")
    page.locator("#enqueue [name=kind]").select_option("email")
    page.locator("#enqueue [name=count]").fill(str(BATCH))
    page.click("#enqueue-button")
    wait_depth(page, "demo", "completed", completed_before + 1)  # the counts move...
    page.wait_for_function(  # ...until every job of the batch has finished, one way or the other
        "n => ['completed', 'failed'].reduce("
        "(sum, w) => sum + Number(document.querySelector(`#demo-${w}-depth .depth`).textContent), 0) >= n",
        arg=completed_before + BATCH,
        timeout=WAIT_MS,
    )
    assert depth(page, "demo", "failed") >= 1, "at a 75% failure rate some jobs use up their 3 attempts"
    shot(page, artifacts, "demo")
    page.emulate_media(color_scheme="dark")  # the demo follows the system's dark mode
    shot(page, artifacts, "demo-dark")
    page.emulate_media(color_scheme="light")

    # A long job run by the real worker: its progress bar moves, then Cancel ends it "cancelled".
    page.click("#report-start")
    expect(page.locator("#report-state")).to_contain_text("processing", timeout=WAIT_MS)
    page.wait_for_function("document.getElementById('report-bar').value > 0", timeout=WAIT_MS)
    expect(page.locator("#report-state")).to_contain_text(" of 30")
    shot(page, artifacts, "demo-report")
    page.click("#report-cancel")
    expect(page.locator("#report-state")).to_contain_text("cancelled", timeout=WAIT_MS)
    expect(page.locator("#report-cancel")).to_be_disabled()

    # Async jobs: an async view queues 20 one-second `async def` jobs, and the worker's event
    # loop runs them side by side, more at once than its 4 runner threads could.
    completed_before = depth(page, "jobs", "completed")
    page.click("#rates-button")
    expect(page.locator("#rates-state")).to_contain_text("queued 20 rate fetches")
    expect(page.locator("#rates-state")).to_contain_text("all 20 done in ", timeout=WAIT_MS)
    wait_depth(page, "jobs", "completed", completed_before + RATES)
    shown = page.locator("#rates-state").text_content() or ""
    most_running = int(re.search(r"up to (\d+) running at once", shown)[1])
    assert most_running > 4, f"the event loop runs more than the 4 runner threads at once: {shown!r}"
    shot(page, artifacts, "demo-rates")

    # A limited queue (GLOBAL_CONCURRENCY 2): a burst of 20 payments, and the worker's 4 runners
    # never hold more than 2 of them. The page records the most it shows processing at once.
    page.evaluate(
        """() => {
          window.mostPaymentsRunning = 0;
          new MutationObserver(() => {
            const shown = Number(document.querySelector("#payments-processing-depth .depth").textContent);
            window.mostPaymentsRunning = Math.max(window.mostPaymentsRunning, shown);
          }).observe(document.getElementById("lists-payments"), {childList: true});
        }"""
    )
    page.click("#payments-button")
    expect(page.locator("#payments-state")).to_have_text("queued 20 payments")
    wait_depth(page, "payments", "processing", 2)
    wait_depth(page, "payments", "completed", 4)  # a few rounds of 2
    assert page.evaluate("window.mostPaymentsRunning") == 2
    assert depth(page, "payments", "pending") >= 1, "the rest wait their turn"
    shot(page, artifacts, "demo-payments")
    # The admin overview shows the queue's limits and the slots in use, while the burst drains.
    page.goto(f"{admin}/")
    limits = page.locator('[data-limits="payments"]')
    expect(limits.locator('[data-limit="global_concurrency"]')).to_contain_text("concurrency 2 (from settings)")
    expect(limits.locator('[data-limit="rate_limit"]')).to_contain_text("rate 5/s (from settings)")
    expect(limits.locator('[data-use="slots"]')).to_have_text("2 of 2 slots in use")
    shot(page, artifacts, "admin-overview-payments")
    limits.screenshot(path=str(artifacts / "admin-payments-limits.png"))  # the column may be scrolled off

    # The sign-up form: a view that calls enqueue(); the real worker runs the job.
    page.goto(f"{demo.url}/signup/")
    page.fill("input[name=email]", "alice@example.com")
    page.click("#signup-button")
    job_id = page.locator("#queued code").text_content()
    assert job_id and re.fullmatch(r"[\w-]+", job_id)
    shot(page, artifacts, "signup")
    page.goto(f"{admin}/jobs/job/{job_id}/")
    expect(page.locator("#content-main")).to_contain_text("send_welcome_email")
    # The page refreshes its status part every 2 s: completed shows up without a reload.
    expect(page.locator('[data-jq-part="status"] .jq-state-completed')).to_have_text("completed")
    page.reload()  # the refresh swaps the status part only; the result is drawn with the page
    expect(page.locator(".jq-json").last).to_contain_text('"sent_to": "alice@example.com"')
    shot(page, artifacts, "admin-signup-job")

    # The admin overview: both queues, and the worker the demo started.
    page.goto(f"{admin}/")
    expect(page.locator(".jq-workers")).to_contain_text("jobs")
    expect(page.locator(".jq-workers .jq-state-running")).to_have_count(1)
    # The charts, drawn from the samples the demo's workers recorded in Redis
    # (every 5 s), swapped in by the page's live refresh when they arrive.
    demo_charts = page.locator('.jq-chart-row[data-queue="demo"]')
    expect(demo_charts.locator("polyline.jq-line-completed").first).to_be_attached(timeout=WAIT_MS)
    assert int(demo_charts.locator("svg.jq-chart").first.get_attribute("data-points") or 0) >= 1
    shot(page, artifacts, "admin-overview")
    page.emulate_media(color_scheme="dark")
    shot(page, artifacts, "admin-overview-dark")
    page.emulate_media(color_scheme="light")

    # Pause claiming on the demo queue, so nothing moves under the retry below.
    row = page.locator(".jq-maintenance tr", has=page.locator("th", has_text=re.compile(r"^demo$")))
    row.locator("select[name=direction]").select_option("out")
    row.get_by_role("button", name="Pause", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("Paused claiming on demo")
    demo_row = page.locator(".jq-queues tbody tr", has=page.locator("th a", has_text=re.compile(r"^demo$")))
    expect(demo_row.locator('[data-paused="out"]')).to_have_text("claiming paused")
    shot(page, artifacts, "admin-overview-paused")

    # A failed job of the demo queue: open it, Retry, and it leaves the failed list.
    page.goto(f"{admin}/demo/failed/")
    expect(page.locator('[data-jq-part="paused"]')).to_contain_text("claiming paused")
    failed_count = page.locator(".jq-tabs li.selected .jq-count")
    failed_before = int(failed_count.text_content())
    assert failed_before >= 1
    shot(page, artifacts, "admin-failed-list")
    link = page.locator("#result_list tbody tr").first.locator("th a")
    failed_id = link.text_content().strip()
    link.click()
    expect(page).to_have_url(f"{admin}/demo/job/{failed_id}/")
    expect(page.locator('[data-jq-part="status"] .jq-state-failed')).to_have_text("failed")
    expect(page.locator(".jq-error").first).to_contain_text("failed (simulated)")
    shot(page, artifacts, "admin-failed-job")
    page.get_by_role("button", name="Retry", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("Retried 1 job(s) of demo.")
    expect(page.locator('[data-jq-part="status"] .jq-state-pending')).to_have_text("pending")
    shot(page, artifacts, "admin-after-retry")
    page.goto(f"{admin}/demo/failed/")
    expect(page.locator("#result_list")).not_to_contain_text(failed_id)
    expect(failed_count).to_have_text(str(failed_before - 1))
    page.goto(f"{admin}/demo/pending/")
    expect(page.locator("#result_list")).to_contain_text(failed_id)  # waiting: claiming is paused
    shot(page, artifacts, "admin-after-retry-pending")
