"""A real worker's Redis connections stay within what docs/workers.md says, so
users who size Redis's maxclients from the docs are not surprised.

The formula is read from the docs themselves: a change to either the docs or
the worker that makes them disagree fails here."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django_jobqueue import enqueue_many
from tests.helpers.paths import ROOT
from tests.helpers.waiting import wait_for
from tests.helpers.workers import worker_env

DOCS = ROOT / "docs" / "workers.md"
CONCURRENCY = 8
SAMPLE_S = 6.0


def documented_bound() -> tuple[int, int, int]:
    """(per runner thread, constant, more with WORKER_EVENTS_LISTENER) from the
    docs' "at most `A x concurrency + queues + B`" (`+ C` with the listener)."""
    text = DOCS.read_text()
    found = re.search(
        r"at most `(\d+) x concurrency \+ queues \+ (\d+)` connections.*?`\+ ?(\d+)`\s+with\s+`WORKER_EVENTS_LISTENER`",
        text,
        re.S,
    )
    assert found, f"{DOCS} no longer states the connection formula this test checks"
    per_runner, constant, listener = (int(g) for g in found.groups())
    return per_runner, constant, listener


def redis_ports_of(pid: int, server_port: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` has open to the
    server (its sockets in /proc/<pid>/fd, looked up in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def worker_clients(r, pid: int, server_port: int) -> list[dict]:
    """The worker's entries of CLIENT LIST, found by their addresses."""
    ports = redis_ports_of(pid, server_port)
    return [c for c in r.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]


def feed(queues: list[str]) -> None:
    """Keep every queue busy with jobs that use each path a runner has:
    completions (handlers that do not use Redis, and handlers that do),
    failures and retries."""
    for queue in queues:
        enqueue_many("uses_db", [{} for _ in range(60)], queue=queue)
        enqueue_many("add", [{"a": 1, "b": 2} for _ in range(30)], queue=queue)
        enqueue_many("boom", [{"message": "no"} for _ in range(10)], queue=queue)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the worker's sockets from /proc")
@pytest.mark.parametrize(
    ("queues", "settings_module"),
    [(["jobs"], "tests.settings"), (["jobs", "high"], "tests.settings_listener")],
    ids=["one-queue", "two-queues-and-events-listener"],
)
def test_a_worker_holds_no_more_connections_than_the_docs_say(r, redis_server, queues, settings_module):
    per_runner, constant, listener = documented_bound()
    bound = per_runner * CONCURRENCY + len(queues) + constant
    if settings_module == "tests.settings_listener":
        bound += listener
    args = ["--verbosity", "0", "--concurrency", str(CONCURRENCY)] + [a for q in queues for a in ("--queue", q)]
    env = {**worker_env(redis_server.url), "DJANGO_SETTINGS_MODULE": settings_module}
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "jobq_worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a worker writing to a pipe nobody reads would stall
    )
    most: list[dict] = []
    try:
        wait_for(lambda: r.zcard("queue:workers"), what="the worker to register")
        deadline = time.monotonic() + SAMPLE_S
        while time.monotonic() < deadline:
            if r.llen("queue:jobs:pending") < 200:
                feed(queues)
            clients = worker_clients(r, proc.pid, redis_server.port)
            if len(clients) > len(most):
                most = clients
            time.sleep(0.01)
        done = int(r.hget("queue:jobs:stats", "completed") or 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert done > 500, "the worker ran too few jobs to count its connections under load"
    detail = ", ".join(f"{c['addr']} {c['cmd']}" for c in most)
    assert CONCURRENCY // 2 < len(most) <= bound, f"{len(most)} connections (bound {bound}): {detail}"
