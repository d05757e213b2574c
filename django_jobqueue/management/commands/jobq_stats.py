from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.api import get_queue
from django_jobqueue.connection import get_client
from django_jobqueue.engine import browse
from django_jobqueue.engine.browse import human_bytes
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.monitor import queue_stats, workers
from django_jobqueue.terminal import safe_json, safe_text

DEPTHS = ("scheduled", "pending", "processing", "completed", "failed")
COUNTERS = ("enqueued", "completed", "failed", "retried", "reclaimed", "expired", "dropped_failed")


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
            retained = {name: browse.retained_memory(get_queue(name)) for name in stats}
            limit = browse.maxmemory(get_client())
        except (JobQueueError, LookupError) as exc:
            raise CommandError(safe_text(exc)) from exc
        except RedisError as exc:
            raise CommandError(safe_text(f"Redis unavailable: {exc}")) from exc
        if options["json"]:
            for name, lists in retained.items():
                stats[name]["retained_memory"] = {
                    "estimate": True,
                    "bytes": sum(r.held_bytes for r in lists.values()),
                    **{which: _as_dict(r) for which, r in lists.items()},
                }
            data = {"queues": stats, "workers": live, "maxmemory": limit}
            self.stdout.write(safe_json(data, indent=2, sort_keys=True))
            return
        header = f"{'queue':<16}" + "".join(f"{d:>11}" for d in DEPTHS) + f"{'oldest':>10}"
        self.stdout.write(header)
        for name, s in stats.items():
            age = s["oldest_pending_age_ms"]
            oldest = "-" if age is None else f"{age / 1000:.1f}s"
            depths = "".join(f"{s[f'{d}_depth']:>11}" for d in DEPTHS)
            self.stdout.write(f"{safe_text(name):<16}{depths}{oldest:>10}")
        self.stdout.write("")
        widths = [max(11, len(c) + 2) for c in COUNTERS]
        self.stdout.write(f"{'totals':<16}" + "".join(f"{c:>{w}}" for c, w in zip(COUNTERS, widths, strict=True)))
        for name, s in stats.items():
            cells = (f"{s[f'{c}_total']:>{w}}" for c, w in zip(COUNTERS, widths, strict=True))
            self.stdout.write(f"{safe_text(name):<16}" + "".join(cells))
        self.stdout.write("")
        self._memory(retained, limit)
        self.stdout.write("")
        if not live:
            self.stdout.write("no live workers")
        for w in live:
            # Everything in a worker's record is stored text: printed escaped.
            queues = ", ".join(safe_text(q) for q in w["queues"])
            self.stdout.write(
                f"worker {safe_text(w['id'])} ({safe_text(w['state'])}) queues {queues}, "
                f"concurrency {safe_text(w['concurrency'])}, heartbeat {w['beat_age_s']}s ago, "
                f"running {len(w['running'])}"
            )

    def _memory(self, retained: dict[str, dict[str, browse.Retained]], limit: int | None) -> None:
        self.stdout.write(
            f"memory held by finished jobs (an estimate: MEMORY USAGE of the newest {browse.MEMORY_SAMPLE} "
            "hashes of each list x its length)"
        )
        self.stdout.write(f"{'memory':<16}{'completed':>36}{'failed':>36}")
        for name, lists in retained.items():
            self.stdout.write(f"{safe_text(name):<16}" + "".join(f"{_describe(r):>36}" for r in lists.values()))
        bounded = sum(r.bound_bytes or 0 for lists in retained.values() for r in lists.values())
        if limit is None:
            self.stdout.write(f"Redis maxmemory: none; full lists would hold about {human_bytes(bounded)}")
        else:
            self.stdout.write(
                f"Redis maxmemory {human_bytes(limit)}; full lists would hold about {human_bytes(bounded)} "
                f"({bounded / limit:.0%})"
            )
        problem = browse.retention_problem(retained, limit)
        if problem:
            self.stdout.write(self.style.WARNING(f"warning: {safe_text(problem)}"))


def _describe(r: browse.Retained) -> str:
    bound = "no bound" if r.bound is None else f"{r.bound:,}"
    per_job = human_bytes(r.job_bytes) + ("" if r.sampled else " assumed")
    return f"{human_bytes(r.held_bytes)} ({r.depth:,} of {bound} x {per_job})"


def _as_dict(r: browse.Retained) -> dict[str, Any]:
    return {
        "depth": r.depth,
        "bound": r.bound,
        "bytes_per_job": r.job_bytes,
        "sampled": r.sampled,
        "bytes": r.held_bytes,
        "bound_bytes": r.bound_bytes,
    }
