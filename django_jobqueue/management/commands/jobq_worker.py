from __future__ import annotations

import gc
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.management import logsetup
from django_jobqueue.worker import Worker


class Command(BaseCommand):
    help = "Run a worker: claim jobs from the given queues (in priority order) and run them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            dest="queues",
            metavar="Q",
            help="queue to serve; repeat for several, highest priority first (default: DEFAULT_QUEUE)",
        )
        parser.add_argument(
            "--concurrency", "-c", type=int, help="runner threads (default: the queue's CONCURRENT_JOBS)"
        )
        parser.add_argument("--burst", action="store_true", help="run what is ready, then exit 0")
        parser.add_argument("--max-jobs", type=int, help="exit after running this many jobs")
        parser.add_argument(
            "--grace",
            type=float,
            help="seconds running jobs get to finish at shutdown (default: SHUTDOWN_GRACE_SECONDS)",
        )
        parser.add_argument("--worker-id", help="a stable name for this worker (default: host.pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        flusher = logsetup.setup(options["verbosity"], self.stderr._out, buffered=True)
        for name in ("concurrency", "max_jobs"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        try:
            worker = Worker(
                options["queues"],
                concurrency=options["concurrency"],
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                grace_seconds=options["grace"],
                worker_id=options["worker_id"],
            )
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        # Everything loaded so far (Django, the project, its jobs) lives as long
        # as the process: out of the cyclic collector's way, which would
        # otherwise walk all of it again on every full collection (about a
        # tenth of a short job's CPU in the benchmark's drain).
        gc.collect()
        gc.freeze()
        try:
            code = worker.run()
        finally:
            gc.unfreeze()  # back to normal when called in-process (tests, call_command)
            if flusher is not None:
                flusher.stop()
        if options["burst"]:
            self.stdout.write(f"burst: {worker.stats.summary()}")
        if code:
            raise SystemExit(code)
