"""The benchmark harness (bench/) works: a tiny quick run of our queue alone.

Needs no peer package and asserts no timing: only that every row of the
table is there with a positive number.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.report import AENQUEUE_ROW, ASYNC_DRAIN_ROW, LIMITED_ROW, ROWS
from tests.helpers.paths import ROOT


def _value(md: str, label: str) -> float:
    line = next((ln for ln in md.splitlines() if ln.startswith(f"| {label} |")), None)
    assert line is not None, f"row {label!r} is missing from the table"
    # A cell may carry a note in brackets after its number: "13,021 (+4.2 µs/job)".
    cell = line.split("|")[2].split(" (")[0].strip().rstrip("†‡").replace(",", "")
    assert re.fullmatch(r"\d+(\.\d+)?", cell), f"row {label!r} has no number: {cell!r}"
    return float(cell)


@pytest.mark.timeout(300)
def test_quick_benchmark_of_our_queue(tmp_path):
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "jobqueue", "--no-venv", "--scale", "0.2"]
    out = subprocess.run(
        [*cmd, "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]

    md = (tmp_path / "benchmarks-results.md").read_text(encoding="utf-8")
    assert "| Measure | django-jobqueue |" in md
    for row in ROWS:
        assert _value(md, row.label) > 0, row.label
    # The global concurrency row states its cost per job against the unlimited drain, and says what it measures.
    limited = next(ln for ln in md.splitlines() if ln.startswith(f"| {LIMITED_ROW.label} |"))
    assert re.search(r"\([+-]\d+\.\d µs/job\)", limited), limited
    assert "the limit never holds a job back" in md
    # The async drain states its ideal and its ratio to it; aenqueue its ratio to the threads' enqueue.
    lines = md.splitlines()
    drain = next(ln for ln in lines if ln.startswith(f"| {ASYNC_DRAIN_ROW.label} |"))
    assert re.search(r"\(ideal \d+\.\d\d s, \d+\.\d\d× it\)", drain), drain
    aenqueue = next(ln for ln in lines if ln.startswith(f"| {AENQUEUE_ROW.label} |"))
    assert re.search(r"\(\d+\.\d\d× 50 threads\)", aenqueue), aenqueue
    assert "Async rows, ours alone." in md
    # Ours only: the reclaim sweep table and the ceilings are there too.
    assert "## Our reclaim sweep" in md
    assert "our engine: claim_nowait() + complete()" in md
    # The table is printed too.
    assert "Drain, 1 worker process, steady (jobs/s)" in out.stdout
    assert (tmp_path / "results.json").exists()
