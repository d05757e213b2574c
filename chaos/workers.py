"""The worker processes of the chaos run: plain ones, and ones in a PID namespace of
their own (behind ``unshare``, which passes no signal on); and reading the tail of a
worker's ledger file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path


def tail_records(path: Path, size: int = 4096) -> list[list[str]]:
    """The last records of a ledger file (the first, perhaps cut, left out)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            lines = f.read().decode(errors="replace").split("\n")
    except OSError:
        return []
    return [line.split() for line in lines[1:] if line]


def namespaces_unavailable() -> str | None:
    """Why workers cannot run in PID namespaces of their own here (None: they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root (unshare --pid needs CAP_SYS_ADMIN)"
    if shutil.which("unshare") is None:
        return "no unshare command"
    try:
        done = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode:
        return f"unshare --pid failed: {done.stderr.decode(errors='replace').strip()}"
    return None


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float
    tag: str  # CHAOS_WORKER: what the ledger records for the executions in this process
    namespaced: bool = False  # in a PID namespace of its own, behind unshare

    def target(self) -> int | None:
        """The pid to signal: the worker's own, not unshare's (unshare passes no
        signal on). None once it is gone."""
        if not self.namespaced:
            return self.proc.pid
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def send(self, signum: int) -> None:
        pid = self.target()
        if pid is None:
            if signum == signal.SIGKILL:
                self.proc.kill()  # with --kill-child, unshare's death kills its child too
            return
        try:
            os.kill(pid, signum)  # a namespace's pid 1 SIGKILLed from outside: the namespace dies
        except ProcessLookupError:
            pass
