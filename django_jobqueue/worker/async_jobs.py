"""AsyncJobs: where a worker runs the jobs whose handler is ``async def``.

One thread of the worker runs an asyncio event loop, started with the first
async job. A runner thread that claims an async job hands it over and goes
back to claiming: the job then waits (on HTTP, say) without holding a thread.
At most ``concurrency`` async jobs run at once (``--async-concurrency``): a
runner that claims one more reserves a slot (waiting for one to free) before
it checks the job (cancelled meanwhile? its only chance begins now?) and
hands it over, so a worker never claims more than it can run.

Nothing the worker keeps itself alive with runs here: leases, the heartbeat
and the sweep have their own threads, and the work after a handler returns
(the result's completion, a failure's retry) runs on finishing threads
(``finish_later``), so that its Redis calls never stall the loop, and the
shutdown's cancellation of the handlers still running never cuts it short.

A handler that blocks the loop (a synchronous call: requests.get, time.sleep,
a database query without sync_to_async) holds up every other async job: a
watchdog logs a warning naming the job the loop is stuck in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("django_jobqueue.worker")

# The loop notes the time this often; a note older than STALLED_S means a
# handler has held the loop (a blocking call) that long.
TICK_S = 0.05
STALLED_S = 0.25
# Threads that finish async jobs (Redis calls after a handler returns).
FINISHERS = 2
# When the loop stops: rounds of cancelling what still runs, each waiting this long.
CANCEL_ROUNDS = 3
CANCEL_WAIT_S = 0.5


class AsyncJobs:
    """An event loop thread, its async jobs, and a bound on how many run at once."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"async concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # touched on the loop's thread only
        self._running = 0  # jobs handed over and not yet done (any thread, under the lock)
        self._finishing: set[concurrent.futures.Future[Any]] = set()  # finish_later's work not yet done
        self._idle = threading.Condition(self._lock)
        self._last_tick = time.monotonic()
        self._stall_reported = 0.0
        self.finish = concurrent.futures.ThreadPoolExecutor(FINISHERS, thread_name_prefix="jobq-async-finish")

    @property
    def running(self) -> int:
        return self._running

    def reserve(self, stopping: threading.Event) -> bool:
        """From a runner thread: take a slot, waiting for one to free. False
        (no slot taken) when the worker began to stop meanwhile."""
        while not self._slots.acquire(timeout=0.2):
            if stopping.is_set():
                return False
        if stopping.is_set():
            self._slots.release()
            return False
        return True

    def unreserve(self) -> None:
        """Give back a slot reserve() took for a job that is not handed over after all."""
        self._slots.release()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]], label: str) -> None:
        """Run ``run()`` on the loop, in the slot reserve() took."""
        loop = self._started_loop()
        with self._lock:
            self._running += 1
        loop.call_soon_threadsafe(self._start, run, label)

    def finish_later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a finishing thread (the work after a handler)."""
        future = self.finish.submit(fn, *args)
        with self._lock:
            self._finishing.add(future)
        future.add_done_callback(self._finished_one)

    def _finished_one(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._finishing.discard(future)
            if not self._running and not self._finishing:
                self._idle.notify_all()

    def _start(self, run: Callable[[], Coroutine[Any, Any, None]], label: str) -> None:
        task = asyncio.get_running_loop().create_task(_labelled(label, run), name=label)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        with self._lock:
            self._running -= 1
            if not self._running and not self._finishing:
                self._idle.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no async job runs and none is being finished, at most
        until ``deadline`` (monotonic). True if none is."""
        with self._lock:
            while self._running or self._finishing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def cancel_all(self, timeout: float) -> None:
        """Cancel the async handlers still running (the end of a shutdown's
        grace period), and wait up to ``timeout`` s for them, and the finishing
        of those that ended meanwhile, to end."""
        loop = self._loop
        if loop is not None and self._running:
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])
        self.wait_idle(time.monotonic() + timeout)

    def stop(self) -> None:
        """Stop the loop (no job left, or none to wait for any longer)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
        self.finish.shutdown(wait=True, cancel_futures=False)

    # ---------------------------------------------------------------- the loop

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                self._thread = threading.Thread(target=self._serve, args=(loop, ready), name="jobq-async", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
                threading.Thread(target=self._watch, name="jobq-async-watchdog", daemon=True).start()
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        self._ticker = loop.create_task(self._tick())  # held: a task nobody holds may be collected
        try:
            loop.run_forever()
        finally:
            # As asyncio.run() ends: what still runs is cancelled (again, for a
            # handler that went on after its first cancellation) and given a
            # moment; then async generators (a redis.asyncio client's closer:
            # async_connection.py) and the default executor end.
            for _ in range(CANCEL_ROUNDS):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                if not pending:
                    break
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_WAIT_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    def _watch(self) -> None:
        """Warn when a handler holds the loop (a blocking call in an async handler)."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            time.sleep(TICK_S)
            stalled = time.monotonic() - self._last_tick
            if stalled < STALLED_S or self._stall_reported == self._last_tick:
                continue
            self._stall_reported = self._last_tick
            logger.warning(
                "async jobs: the event loop has been blocked for %.2f s so far by %s: a synchronous call in an async "
                "handler holds up every async job (use await, or sync_to_async / asyncio.to_thread)",
                stalled,
                _blocking_job(thread) or "code outside any job",
            )


async def _labelled(label: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # A frame named here, which the watchdog finds on the loop's stack (its label says which job).
    await run()


def _blocking_job(thread: threading.Thread) -> str | None:
    """The label of the async job whose code the loop's thread runs now."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is _labelled.__code__:
            return str(frame.f_locals.get("label"))
        frame = frame.f_back
    return None
