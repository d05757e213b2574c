"""The chaos run (chaos/run.py): workers SIGKILLed and Redis SIGKILLed and restarted
while jobs run, then every acknowledged job accounted for.

The short run is part of the default suite; the full 100 000-job run is marked slow
(``pytest -m slow``; figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.workers import ROOT


def chaos(tmp_path, *args: str, timeout: float) -> dict:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--workdir", str(tmp_path / "run"), "--json", str(figures), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "RESULT:    PASS: nothing lost" in done.stdout
    return json.loads(figures.read_text())


def assert_nothing_lost(f: dict, jobs: int) -> None:
    assert f["acknowledged"] == jobs
    assert f["statuses"] == {"completed": jobs}
    assert f["lost"] == 0
    assert f["left"] == {"pending": 0, "processing": 0, "claiming": 0, "scheduled": 0}
    # The completing claim was always the last claim: no late worker finished a job.
    assert f["completed_by_a_stale_claim"] == 0
    # Each claim ran the job at most once, and every extra run was a redelivery.
    assert f["claims_that_ran_twice"] == 0 and f["runs_not_counted_as_redeliveries"] == 0
    # Extra runs only where a worker died or a claim was lost.
    assert f["unexplained_ids"] == []
    assert f["executions"] == jobs + sum(f["extra_executions_by_cause"].values())
    assert f["engine_counters"]["completed"] == jobs + f["unacknowledged_completed"]


@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing(tmp_path):
    f = chaos(
        tmp_path,
        *("--jobs", "2000", "--workers", "2", "--kills", "2", "--redis-restarts", "1"),
        *("--rate", "200", "--seconds", "120"),
        timeout=240,
    )
    assert (f["worker_kills"], f["redis_restarts"], f["appendfsync"]) == (2, 1, "always")
    assert_nothing_lost(f, 2000)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_chaos_run_loses_nothing(tmp_path):
    f = chaos(tmp_path, "--seconds", "1800", timeout=3000)
    assert (f["worker_kills"], f["redis_restarts"]) == (20, 2)
    assert_nothing_lost(f, 100_000)
