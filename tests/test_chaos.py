"""The chaos run (chaos/run.py): workers SIGKILLed and Redis SIGKILLed and restarted
while jobs of mixed kinds run, then every acknowledged job accounted for, per kind.

The short run is part of the default suite; the full 100 000-job run is marked slow
(``pytest -m slow``; figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chaos.verify import ALLOWED  # the end states each kind may reach
from tests.helpers.paths import ROOT

# More of the rarer kinds than the full run's default, so that 2 000 jobs hold enough
# of each; --aim makes each kill land in a run of the next kind in turn.
SHORT_RUN = (
    *("--jobs", "2000", "--workers", "3", "--kills", "5", "--redis-restarts", "1", "--aim"),
    *("--mix", "ordinary=85,at-most-once=4,max-attempts-1=4,ttl=6,slow-hook=1", "--ttl", "0.5-2"),
    *("--rate", "200", "--work-ms", "20", "--seconds", "150"),
)


def chaos(tmp_path, *args: str, timeout: float) -> dict:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--workdir", str(tmp_path / "run"), "--json", str(figures), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-5000:]
    assert "RESULT:    PASS: nothing lost" in done.stdout
    return json.loads(figures.read_text())


def assert_every_job_accounted_for(f: dict, jobs: int) -> None:
    assert f["acknowledged"] == jobs
    kinds = f["kinds"]
    assert sum(k["jobs"] for k in kinds.values()) == jobs
    for kind, k in kinds.items():
        # Never lost (or failed) without having run.
        assert k["lost_unrun"] == 0, (kind, k["lost_unrun_ids"])
        # Every extra run traced to a kill or a lost claim.
        assert k["unexplained_ids"] == [], (kind, k["unexplained_ids"])
        # Ended as the kind may, and failed or lost only after a cut-off run.
        assert set(k["statuses"]) <= ALLOWED[kind], (kind, k["statuses"])
        assert k["bad_end_ids"] == [], (kind, k["bad_end_ids"])
    assert kinds["ordinary"]["statuses"] == {"completed": kinds["ordinary"]["jobs"]}
    # At most once means once; max_attempts=1 means one run.
    assert f["at_most_once_ran_twice"] == 0 and f["max_attempts_1_ran_twice"] == 0, f["ran_twice_ids"]
    assert f["left"] == {"pending": 0, "processing": 0, "claiming": 0, "scheduled": 0} and f["left_ids"] == []
    # The completing claim was always the last claim: no late worker finished a job.
    assert f["completed_by_a_stale_claim"] == 0
    # Each claim ran the job at most once, and every extra run was a redelivery.
    assert f["claims_that_ran_twice"] == 0 and f["runs_not_counted_as_redeliveries"] == 0, f["uncounted_ids"]
    # Each job ended once: the engine's counters are the jobs' end states.
    assert f["counters_unlike_end_states"] == {}
    # A slow hook never made another worker take a live one for lost; no worker died by itself.
    assert f["live_workers_taken_for_lost"] == [] and f["workers_exited_by_themselves"] == []
    assert f["hooks"]["called_twice"] == []
    completed = sum(k["statuses"].get("completed", 0) for k in kinds.values())
    assert f["engine_counters"]["completed"] == completed + f["unacknowledged_completed"]


@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing(tmp_path):
    f = chaos(tmp_path, *SHORT_RUN, timeout=240)
    assert (f["worker_kills"], f["redis_restarts"], f["appendfsync"]) == (5, 1, "always")
    assert {kind: k["jobs"] for kind, k in f["kinds"].items()} == {
        "ordinary": 1700,
        "at-most-once": 80,
        "max-attempts-1": 80,
        "ttl": 120,
        "slow-hook": 20,
    }
    assert_every_job_accounted_for(f, 2000)
    ns = f["pid_namespaces"]
    if ns["skipped"] is None:
        # Two workers at a time each pid 1 on the same host: both ran jobs, under ids of their own.
        assert ns["kept"] == 2 and ns["pids_seen"] == [1]
        assert ns["workers_that_ran_jobs"] >= 2
        assert len(set(ns["worker_ids"])) == len(ns["worker_ids"]) >= 2


def test_a_bad_mix_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--mix", "ordinary=9,sometimes=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown kind 'sometimes'" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_chaos_run_loses_nothing(tmp_path):
    f = chaos(tmp_path, "--seconds", "1800", timeout=3000)
    assert (f["worker_kills"], f["redis_restarts"]) == (20, 2)
    assert_every_job_accounted_for(f, 100_000)
