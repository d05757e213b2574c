"""Several worker processes from one command: ``jobq_worker --processes N``.

Threads share one interpreter lock, so one worker process runs Python on one
core at a time. For short or CPU-bound jobs on a machine with several cores,
N processes serve the queues N times over. The pool is a small supervisor:

- it starts N copies of the worker command (``python -m django jobq_worker``
  with the same options), each in a process group of its own, so a Ctrl-C in
  a terminal reaches each child once, through the pool, not twice;
- a signal (SIGTERM, SIGINT) is passed on to every child, which shuts down as
  a single worker does (finish running jobs within the grace period, hand
  back the rest); a second signal is passed on too, and they exit at once.
  It is passed on as POOL_STOP_SIGNAL, so that a child signalled directly as
  well (systemd's KillMode=control-group signals every process of the
  service) counts that request once, however late the pool's copy arrives;
- a child that dies while the pool runs (killed, out of memory) is started
  again after a pause that grows while it keeps dying soon after starting;
  its jobs come back by the lapsed-worker sweep, as for any dead worker;
- a child that exits with an error within its first seconds (bad settings,
  an unknown queue) stops the pool with that exit code rather than start
  again forever;
- with ``--burst`` the pool exits once every child has drained the queues.

Each child watches its parent and shuts down gracefully if the pool itself is
killed, so no worker outlives it unsupervised.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger("django_jobqueue.worker")

# Set in a child's environment: its slot in the pool (0 .. N-1). A worker
# command started with it runs one worker, whatever --processes says.
CHILD_ENV = "JOBQ_POOL_CHILD"
# What the pool sends its children for each stop request it gets: a signal of
# its own, so a child tells the pool's requests from the signals sent to it
# directly and counts each source's apart (Worker.run(pool_child=True)).
POOL_STOP_SIGNAL = signal.SIGUSR1
# A child that fails this soon after it started is taken to be misconfigured.
STARTUP_S = 5.0
# Pauses before starting a dead child again: doubled while it keeps dying
# within STARTUP_S of its start, back to the first after a longer life.
RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0
POLL_S = 0.1


@dataclass
class _Child:
    slot: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = RESTART_MIN_S
    restart_at: float | None = None


class WorkerPool:
    """Run ``processes`` copies of a worker command and keep them running."""

    def __init__(self, argv: Sequence[str], processes: int, *, burst: bool = False) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.argv = list(argv)
        self.processes = processes
        self.burst = burst
        self._children = [_Child(slot) for slot in range(processes)]
        self._lock = threading.Lock()
        self._signals: list[int] = []  # asked for (by a signal handler or stop())
        self._passed_on = 0  # how many of them the children have been sent
        self._unclean = False  # a child exited with an error after the stop began

    # ------------------------------------------------------------ lifecycle

    def run(self, *, install_signals: bool = True) -> int:
        """Start the children and supervise them until none is left; returns
        the exit code: 0, the code of a child that failed at start-up, or 1
        when children had to exit at once (a second signal)."""
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        logger.info("worker pool: starting %d processes", self.processes)
        for child in self._children:
            self._start(child)
        code = 0
        while True:
            self._pass_on_signals()
            left = False
            for child in self._children:
                if child.proc is not None:
                    if child.proc.poll() is None:
                        left = True
                        continue
                    failed = self._ended(child)
                    if failed is not None:
                        code = code or failed
                        self.stop()
                if child.restart_at is not None:
                    if self.stopping:
                        child.restart_at = None
                    else:
                        left = True
                        if time.monotonic() >= child.restart_at:
                            self._start(child)
            if not left:
                break
            time.sleep(POLL_S)
        logger.info("worker pool: stopped")
        return code or (1 if self._unclean else 0)

    @property
    def stopping(self) -> bool:
        with self._lock:
            return bool(self._signals)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every child to shut down (thread-safe); a second call makes them exit at once."""
        with self._lock:
            self._signals.append(signum)

    # ------------------------------------------------------------- children

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop(signum)

    def _start(self, child: _Child) -> None:
        # The parent's first import path (the directory of manage.py, or the
        # current one under `python -m django`) goes first in the child's, so
        # the project imports there as it did here.
        paths = [os.path.abspath(sys.path[0] or os.curdir), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, CHILD_ENV: str(child.slot), "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        # A process group of its own: a Ctrl-C at a terminal reaches the pool
        # only, which passes it on once (twice would mean "exit at once").
        child.proc = subprocess.Popen(self.argv, env=env, process_group=0)  # noqa: S603 - our own command line
        child.started = time.monotonic()
        child.restart_at = None
        logger.info("worker pool: process %d started (pid %d)", child.slot, child.proc.pid)

    def _ended(self, child: _Child) -> int | None:
        """Deal with a child that exited: plan its restart, or return an exit
        code that should stop the pool."""
        assert child.proc is not None
        code = child.proc.returncode
        lived = time.monotonic() - child.started
        child.proc = None
        if self.stopping:
            # Killed by our own stop signal: it came while the child had no
            # handler for it, before its worker ran or after it had finished
            # (Python restores the default action as it exits), so it held no
            # job. Any other death or error code is an unclean stop.
            self._unclean = self._unclean or code not in (0, -POOL_STOP_SIGNAL)
            return None
        if code == 0:
            if self.burst:
                return None  # drained the queues: done
            # Its own decision (--max-jobs): a fresh process takes its place now.
            child.pause = RESTART_MIN_S
            child.restart_at = time.monotonic()
            logger.info("worker pool: process %d exited after %.1f s; starting a fresh one", child.slot, lived)
            return None
        if code > 0 and lived < STARTUP_S:
            logger.error(
                "worker pool: process %d exited with code %d %.1f s after it started (see its errors above); stopping",
                child.slot,
                code,
                lived,
            )
            return code
        # Killed, or failed after a good start: again, after a pause that grows
        # while it keeps dying young.
        child.pause = min(RESTART_MAX_S, child.pause * 2) if lived < STARTUP_S else RESTART_MIN_S
        child.restart_at = time.monotonic() + child.pause
        how = f"signal {-code}" if code < 0 else f"code {code}"
        logger.warning(
            "worker pool: process %d ended (%s) after %.1f s; starting it again in %.1f s",
            child.slot,
            how,
            lived,
            child.pause,
        )
        return None

    def _pass_on_signals(self) -> None:
        with self._lock:
            new, self._passed_on = self._signals[self._passed_on :], len(self._signals)
        for _signum in new:
            for child in self._children:
                if child.proc is not None and child.proc.poll() is None:
                    try:
                        child.proc.send_signal(POOL_STOP_SIGNAL)
                    except ProcessLookupError:
                        pass


def watch_parent(on_orphaned: Callable[[], None], interval: float = 1.0) -> threading.Thread:
    """In a pool's child: call ``on_orphaned`` once if the pool process goes away."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        logger.warning("the worker pool (pid %d) is gone: shutting down", parent)
        on_orphaned()

    thread = threading.Thread(target=watch, name="jobq-pool-watch", daemon=True)
    thread.start()
    return thread


def child_argv(args: Sequence[str]) -> list[str]:
    """The command line of one child: this interpreter running the worker
    command with ``args`` (the pool's own options, --processes left out)."""
    return [sys.executable, "-m", "django", "jobq_worker", *args]
