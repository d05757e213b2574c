"""`python -m django_jobqueue.devserver`, the private Redis that `make demo` starts.

However it ends (the demo stopping it, Ctrl-C, a closed terminal, or its
redis-server dying), it stops that server and removes the server's folder,
quietly when asked to stop, saying so when the server died by itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.helpers.paths import ROOT


@dataclass
class Running:
    proc: subprocess.Popen[str]
    port: int
    dir: Path


@pytest.fixture
def devserver() -> Iterator[Running]:
    """The devserver as `make demo` runs it, once it says where it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "django_jobqueue.devserver"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # its first line, or "" if it exits first
        found = re.search(r"listening at redis://127\.0\.0\.1:(\d+)/0 \(files in (.+)\)$", line)
        assert found, f"unexpected first line {line!r}"
        running = Running(proc, int(found.group(1)), Path(found.group(2)))
        try:
            yield running
        finally:
            # Whatever the test did, leave no process or folder behind.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if answers(running.port):
                with redis.Redis(port=running.port) as client, contextlib.suppress(redis.ConnectionError):
                    client.shutdown(nosave=True)
            shutil.rmtree(running.dir, ignore_errors=True)


def answers(port: int) -> bool:
    """One PING, no retries (a client's would wait seconds on a closed port)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_request_stops_the_server_and_removes_its_folder(devserver, signum):
    """SIGTERM from `make demo`, SIGINT from Ctrl-C, SIGHUP from a closed terminal."""
    assert answers(devserver.port) and devserver.dir.is_dir()

    devserver.proc.send_signal(signum)
    _out, err = devserver.proc.communicate(timeout=15)

    assert devserver.proc.returncode == 0
    assert err == ""
    assert not devserver.dir.exists()
    assert not answers(devserver.port)


def test_a_server_that_dies_is_reported_and_its_folder_removed(devserver):
    """`make demo` keeps its page up when its Redis dies: the devserver says what
    happened, and what it leaves is nothing."""
    with redis.Redis(port=devserver.port) as client:
        server_pid = int(client.info("server")["process_id"])
    os.kill(server_pid, signal.SIGKILL)

    _out, err = devserver.proc.communicate(timeout=15)

    assert devserver.proc.returncode == 1
    assert err == f"redis://127.0.0.1:{devserver.port}/0: the server was killed by SIGKILL\n"
    assert not devserver.dir.exists()
