from __future__ import annotations

import gc
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.management import logsetup
from django_jobqueue.terminal import safe_text
from django_jobqueue.worker import Worker
from django_jobqueue.worker.presence import WorkerIdInUse
from django_jobqueue.worker.supervisor import CHILD_ENV, WorkerPool, child_argv, watch_parent


class Command(BaseCommand):
    help = (
        "Run a worker: claim jobs from the given queues (in priority order) and run them. "
        "It logs a line for each job; with -v 2 a failed attempt's line has its traceback."
    )

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
        parser.add_argument(
            "--async-concurrency",
            type=int,
            help="async handlers (async def) running at once on the worker's event loop (default 100)",
        )
        parser.add_argument("--burst", action="store_true", help="run what is ready, then exit 0")
        parser.add_argument("--max-jobs", type=int, help="exit after running this many jobs")
        parser.add_argument(
            "--grace",
            type=float,
            help="seconds running jobs get to finish at shutdown (default: SHUTDOWN_GRACE_SECONDS)",
        )
        parser.add_argument("--worker-id", help="a stable name for this worker (default: host.pid)")
        parser.add_argument(
            "--no-scheduler",
            action="store_true",
            help="do not run the periodic jobs' scheduler in this worker (every other worker may; "
            "a burst worker never does)",
        )
        parser.add_argument(
            "--processes",
            "-p",
            type=int,
            default=1,
            help="worker processes, each with its own runner threads, started and kept running by this "
            "command (default 1); with --worker-id W they are named W-0, W-1, ...",
        )
        logsetup.add_log_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        flusher = logsetup.setup(
            options["verbosity"], logsetup.unwrapped(self.stderr), buffered=True, log_format=options["log_format"]
        )
        for name in ("concurrency", "async_concurrency", "max_jobs", "processes"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        slot = os.environ.get(CHILD_ENV)  # set when this process is one of a pool's
        worker_id = options["worker_id"]
        if slot is not None and worker_id:
            worker_id = f"{worker_id}-{slot}"
        try:
            # Made in a pool's parent too: bad options fail here, once, before any child starts.
            worker = Worker(
                options["queues"],
                concurrency=options["concurrency"],
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                grace_seconds=options["grace"],
                worker_id=worker_id,
                scheduler=not options["no_scheduler"],
                async_concurrency=options["async_concurrency"],
            )
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(safe_text(exc)) from exc
        if options["processes"] > 1 and slot is None:
            try:
                pool = WorkerPool(child_argv(self._child_args(options)), options["processes"], burst=options["burst"])
                code = pool.run()
            finally:
                if flusher is not None:
                    flusher.stop()
            if code:
                raise SystemExit(code)
            return
        if slot is not None:
            watch_parent(worker.stop)  # the pool killed: shut down, do not run unsupervised
        # Everything loaded so far (Django, the project, its jobs) lives as long
        # as the process: out of the cyclic collector's way, which would
        # otherwise walk all of it again on every full collection (about a
        # tenth of a short job's CPU in the benchmark's drain).
        gc.collect()
        gc.freeze()
        try:
            code = worker.run(pool_child=slot is not None)
        except WorkerIdInUse as exc:
            raise CommandError(safe_text(exc)) from exc
        finally:
            gc.unfreeze()  # back to normal when called in-process (tests, call_command)
            if flusher is not None:
                flusher.stop()
        if options["burst"]:
            self.stdout.write(f"burst: {worker.stats.summary()}")
        if code:
            raise SystemExit(code)

    @staticmethod
    def _child_args(options: dict[str, Any]) -> list[str]:
        """The options of one process of a pool: this command's, --processes left out."""
        args = [f"--verbosity={options['verbosity']}"]
        for queue in options["queues"] or []:
            args.append(f"--queue={queue}")
        for name in (
            "concurrency",
            "async_concurrency",
            "max_jobs",
            "grace",
            "worker_id",
            "log_format",
            "settings",
            "pythonpath",
        ):
            if options.get(name) is not None:
                args.append(f"--{name.replace('_', '-')}={options[name]}")
        for name in ("burst", "no_scheduler", "traceback", "no_color", "force_color"):
            if options.get(name):
                args.append(f"--{name.replace('_', '-')}")
        return args
