from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.monitor import queue_stats, workers

DEPTHS = ("scheduled", "pending", "processing", "completed", "failed")
COUNTERS = ("enqueued", "completed", "failed", "retried", "reclaimed", "expired")


class Command(BaseCommand):
    help = "Show each queue's depths, counters and oldest pending age, and the live workers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--queue", "-q", action="append", dest="queues", metavar="Q", help="only this queue (repeatable)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            stats = queue_stats(options["queues"])
            live = workers()
        except (JobQueueError, LookupError) as exc:
            raise CommandError(str(exc)) from exc
        except RedisError as exc:
            raise CommandError(f"Redis unavailable: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"queues": stats, "workers": live}, indent=2, sort_keys=True))
            return
        header = f"{'queue':<16}" + "".join(f"{d:>11}" for d in DEPTHS) + f"{'oldest':>10}"
        self.stdout.write(header)
        for name, s in stats.items():
            age = s["oldest_pending_age_ms"]
            oldest = "-" if age is None else f"{age / 1000:.1f}s"
            self.stdout.write(f"{name:<16}" + "".join(f"{s[f'{d}_depth']:>11}" for d in DEPTHS) + f"{oldest:>10}")
        self.stdout.write("")
        self.stdout.write(f"{'totals':<16}" + "".join(f"{c:>11}" for c in COUNTERS))
        for name, s in stats.items():
            self.stdout.write(f"{name:<16}" + "".join(f"{s[f'{c}_total']:>11}" for c in COUNTERS))
        self.stdout.write("")
        if not live:
            self.stdout.write("no live workers")
        for w in live:
            self.stdout.write(
                f"worker {w['id']} ({w['state']}) queues {', '.join(w['queues'])}, concurrency {w['concurrency']}, "
                f"heartbeat {w['beat_age_s']}s ago, running {len(w['running'])}"
            )
