"""The seed's mock worker pool, in the web process, driving the "demo" queue.

Each pool worker blocks in claim(), sleeps for the configured latency, then
completes, fails (at the failure rate) or hangs (at the hang rate): it walks
away without completing or failing, as a crashed process would, and the
job stays in processing until a reclaim sweep hands it back.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass

from django_jobqueue import get_queue
from django_jobqueue.connection import get_client
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker.sampling import Sampler

QUEUE = "demo"
KINDS = ("email", "webhook", "thumbnail", "invoice")


@dataclass
class PoolConfig:
    size: int = 0
    latency_ms: int = 300
    fail_rate: float = 0.1
    hang_rate: float = 0.05


class MockPool:
    def __init__(self) -> None:
        self.config = PoolConfig()
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self._lock = threading.Lock()
        self._sampler: Sampler | None = None
        self._sampler_lock = threading.Lock()

    @property
    def sampler(self) -> Sampler:
        with self._sampler_lock:
            if self._sampler is None:
                self._sampler = Sampler("demo-pool", [get_queue(QUEUE)], get_client)
            return self._sampler

    def configure(self, size: int, latency_ms: int, fail_rate: float, hang_rate: float) -> PoolConfig:
        with self._lock:
            self.config = PoolConfig(
                size=max(0, min(32, size)),
                latency_ms=max(0, min(10_000, latency_ms)),
                fail_rate=max(0.0, min(1.0, fail_rate)),
                hang_rate=max(0.0, min(1.0, hang_rate)),
            )
            while len(self._threads) > self.config.size:
                _thread, stop = self._threads.pop()
                stop.set()
            while len(self._threads) < self.config.size:
                stop = threading.Event()
                n = len(self._threads) + 1
                t = threading.Thread(target=self._work, args=(f"demo-pool-{n}", stop), daemon=True)
                t.start()
                self._threads.append((t, stop))
            return self.config

    def state(self) -> dict:
        return asdict(self.config)

    def _work(self, name: str, stop: threading.Event) -> None:
        queue = get_queue(QUEUE)
        while not stop.is_set():
            try:
                self._one_job(queue, name)
                # As a real worker does: what the pool ran feeds the admin's charts.
                self.sampler.flush_due()
            except Exception:  # noqa: BLE001 - Redis away: wait and retry, as a worker would
                # A job claimed before Redis went away comes back when its lease ends.
                stop.wait(1)

    def _one_job(self, queue: RedisJobQueue, name: str) -> None:
        job = queue.claim(timeout_ms=1000, worker_id=name)
        if job is None:
            return
        started, started_ms = time.monotonic(), time.time() * 1000
        cfg = self.config
        time.sleep(cfg.latency_ms / 1000)
        roll = random.random()
        if roll < cfg.hang_rate:
            return  # walk away: only the reclaimer can recover this job
        if roll < cfg.hang_rate + cfg.fail_rate:
            queue.fail(job, f"{job.payload.get('kind', 'job')} failed (simulated)")
            outcome = "failed"
        else:
            queue.complete(job, {"done_by": name, "kind": job.payload.get("kind")})
            outcome = "completed"
        self.sampler.ran(queue, job, outcome, time.monotonic() - started, started_ms)


pool = MockPool()
