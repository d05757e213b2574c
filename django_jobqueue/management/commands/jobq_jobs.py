from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.api import get_queue
from django_jobqueue.engine import browse, bulk
from django_jobqueue.engine.progress import Progress
from django_jobqueue.engine.queue_ops import Refusal
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.queue import Outcome
from django_jobqueue.terminal import safe_json, safe_text

STATES = ("scheduled", "pending", "processing", "completed", "failed")
# Fields printed as blocks by `show`, newlines kept (any other stored newline is escaped).
MULTILINE_FIELDS = frozenset({"last_traceback"})
# What each outcome that changed nothing is called in the report.
LABELS: dict[Outcome | Refusal, str] = {
    Outcome.MISSING: "not found",
    Outcome.NOT_OWNER: "refused (not in a state that allows it)",
    Refusal.AT_MOST_ONCE_RUNNING: "refused (at-most-once and running: it would run twice)",
    Refusal.UNIQUE_KEY_HELD: "refused (another unfinished job holds its unique key)",
}


class Command(BaseCommand):
    help = "Look at and change jobs from the shell: list, show, retry, requeue, delete, cancel, purge, pause, resume."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--queue", "-q", help="the queue (default: DEFAULT_QUEUE)")
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        p = sub.add_parser("list", help="ids of one state, a page at a time (never the whole list)")
        p.add_argument("state", choices=STATES)
        p.add_argument("--cursor", type=int, default=0, help="where to start (printed by the previous page)")
        p.add_argument("--count", type=int, default=20)
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("show", help="one job's fields (claim token hidden)")
        p.add_argument("job_id")
        p.add_argument("--json", action="store_true")

        p = sub.add_parser("retry", help="replay finished jobs, keeping their history")
        p.add_argument("job_ids", nargs="*")
        p.add_argument("--all-failed", action="store_true", help="replay the whole dead letter (failed list)")

        p = sub.add_parser("requeue", help="run scheduled jobs now / hand running jobs back now")
        p.add_argument("job_ids", nargs="+")

        p = sub.add_parser("delete", help="delete jobs that are not running")
        p.add_argument("job_ids", nargs="+")

        p = sub.add_parser(
            "cancel", help="cancel jobs: a waiting one never runs, a running one is asked to stop (any queue)"
        )
        p.add_argument("job_ids", nargs="+")

        p = sub.add_parser("purge", help="empty a list (not processing), deleting its jobs")
        p.add_argument("state", choices=[s for s in STATES if s != "processing"])
        p.add_argument("--yes", action="store_true", help="do not ask")

        for name in ("pause", "resume"):
            p = sub.add_parser(name, help=f"{name} enqueueing (in), claiming (out) or both (all)")
            p.add_argument("direction", nargs="?", default="all", choices=("in", "out", "all"))

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            queue = get_queue(options["queue"])
            getattr(self, f"do_{options['action']}")(queue, options)
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(safe_text(exc)) from exc
        except RedisError as exc:
            raise CommandError(safe_text(f"Redis unavailable: {exc}")) from exc

    def do_list(self, queue: Any, options: dict[str, Any]) -> None:
        if options["count"] < 1:
            raise CommandError("--count must be at least 1")
        cursor, ids = queue.scan(options["state"], options["cursor"], options["count"])
        rows = browse.job_rows(queue, ids)
        if options["json"]:
            self.stdout.write(safe_json({"cursor": cursor, "jobs": rows}, indent=2))
            return
        for row in rows:
            self.stdout.write(
                f"{safe_text(row['id'])}  {safe_text(row.get('name') or '-'):<24} "
                f"{safe_text(row.get('status') or 'gone'):<10} attempts {safe_text(row.get('attempts') or 0)}  "
                f"{safe_text(row.get('last_error') or '')}".rstrip()
            )
        self.stdout.write(f"next: --cursor {cursor}" if cursor else "(end)")

    def do_show(self, queue: Any, options: dict[str, Any]) -> None:
        fields = browse.get_job(queue, options["job_id"])
        if fields is None:
            raise CommandError(safe_text(f"no job {options['job_id']!r} in queue {queue.queue_name!r}"))
        if options["json"]:
            self.stdout.write(safe_json(fields, indent=2, sort_keys=True))
            return
        shown = {safe_text(key): safe_text(value, multiline=key in MULTILINE_FIELDS) for key, value in fields.items()}
        if (progress := Progress.from_fields(fields)) is not None:
            shown["progress"] = f"{progress.fraction:g} ({progress.percent}%)"
        width = max(len(k) for k in shown)
        for key in sorted(shown):
            self.stdout.write(f"{key:<{width}}  {shown[key]}")

    def _report(self, verb: str, outcomes: dict[Outcome | Refusal, list[str]]) -> None:
        for outcome, ids in outcomes.items():
            label = verb if outcome is Outcome.OK else LABELS.get(outcome, outcome.value)
            self.stdout.write(f"{label}: {len(ids)} {safe_text(' '.join(ids))}")
        if any(o is not Outcome.OK for o in outcomes):
            raise CommandError("some jobs were left as they were")

    def do_retry(self, queue: Any, options: dict[str, Any]) -> None:
        if options["all_failed"]:
            report = queue.replay_dead_letter()
            self.stdout.write(f"replayed: {report.replayed}")
            if report.refused:
                self._report("replayed", {Refusal.UNIQUE_KEY_HELD: report.refused})
            return
        if not options["job_ids"]:
            raise CommandError("name job ids, or give --all-failed")
        self._report("replayed", bulk.apply(queue, "retry", options["job_ids"]))

    def do_requeue(self, queue: Any, options: dict[str, Any]) -> None:
        self._report("requeued", bulk.apply(queue, "requeue", options["job_ids"]))

    def do_delete(self, queue: Any, options: dict[str, Any]) -> None:
        self._report("deleted", bulk.apply(queue, "delete", options["job_ids"]))

    def do_cancel(self, queue: Any, options: dict[str, Any]) -> None:
        # --queue, or else every configured queue is searched for each id.
        from django_jobqueue.cancellation import cancel

        left = False
        for job_id in options["job_ids"]:
            try:
                done = cancel(job_id, queue=options["queue"])
            except JobQueueError as exc:
                self.stdout.write(safe_text(f"{job_id}: {exc}"))
                left = True
                continue
            what = "cancelled" if done.value == "cancelled" else "cancellation asked (running: its worker ends it)"
            self.stdout.write(safe_text(f"{job_id}: {what}"))
        if left:
            raise CommandError("some jobs were left as they were")

    def do_purge(self, queue: Any, options: dict[str, Any]) -> None:
        state = options["state"]
        if not options["yes"]:
            count = browse.list_length(queue, state)
            answer = input(f"Delete the {count} job(s) on {safe_text(queue.queue_name)}:{state}? Type 'yes': ")
            if answer.strip() != "yes":
                raise CommandError("not purged")
        result = bulk.purge(queue, state)
        self.stdout.write(f"purged {state}: {result.done} job(s) deleted, {result.skipped} stale id(s) dropped")

    def do_pause(self, queue: Any, options: dict[str, Any]) -> None:
        self.stdout.write(safe_text(f"{queue.queue_name}: paused {queue.pause(options['direction'])}"))

    def do_resume(self, queue: Any, options: dict[str, Any]) -> None:
        self.stdout.write(safe_text(f"{queue.queue_name}: paused {queue.resume(options['direction'])}"))
