from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.api import get_queue
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.monitor import queue_names
from django_jobqueue.terminal import safe_text


class Command(BaseCommand):
    help = (
        "Run the maintenance sweep: promote due scheduled jobs, hand back jobs whose lease ran out, "
        "expire jobs past their TTL. Workers do this themselves; this is for cron or a standalone sweeper."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--queue", "-q", action="append", dest="queues", metavar="Q", help="only this queue (repeatable)"
        )
        parser.add_argument("--loop", action="store_true", help="sweep every --interval seconds until SIGTERM/SIGINT")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between sweeps with --loop (default 1)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive")
        try:
            queues = [get_queue(name) for name in queue_names(options["queues"])]
        except (JobQueueError, LookupError) as exc:
            raise CommandError(safe_text(exc)) from exc
        stop = threading.Event()
        if options["loop"]:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            names = safe_text(", ".join(q.queue_name for q in queues))
            self.stdout.write(f"sweeping {names} every {options['interval']} s; SIGTERM or Ctrl-C stops")
            self.stdout.flush()
        while True:
            for queue in queues:
                try:
                    result = queue.sweep()
                except RedisError as exc:
                    if not options["loop"]:
                        raise CommandError(safe_text(f"Redis unavailable: {exc}")) from exc
                    self.stderr.write(safe_text(f"{queue.queue_name}: Redis unavailable: {exc}"))
                    continue
                if result.reclaimed or result.dead_lettered or result.expired or result.promoted or not options["loop"]:
                    counts = (
                        f"{len(result.reclaimed)} reclaimed, {len(result.dead_lettered)} dead-lettered, "
                        f"{len(result.expired)} expired, {result.promoted} promoted"
                    )
                    self.stdout.write(f"{safe_text(queue.queue_name)}: {counts}")
            if not options["loop"] or stop.wait(options["interval"]):
                return
