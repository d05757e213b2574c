from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.api import get_queue
from django_jobqueue.conf import get_settings
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.flow_limits import LimitsView, change_limits, limits_view, parse_concurrency, parse_rate_limit
from django_jobqueue.terminal import safe_json, safe_text

ACTIONS = ("list", "set-limit", "reset-limit")
# The options that go with set-limit only.
SET_OPTIONS = ("global_concurrency", "rate_limit", "no_global_concurrency", "no_rate_limit")


class Command(BaseCommand):
    help = (
        "List the queues with their flow limits (global concurrency, rate limit) and what is in use now; "
        "set-limit overrides a queue's limits at run time (workers follow at their next claim), "
        "reset-limit goes back to the settings' values."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", nargs="?", default="list", choices=ACTIONS)
        parser.add_argument("queue", nargs="?", help="the queue (set-limit, reset-limit)")
        parser.add_argument(
            "--global-concurrency", metavar="N", help="set-limit: most jobs of the queue running at once (0: no limit)"
        )
        parser.add_argument("--rate-limit", metavar="RATE", help="set-limit: most jobs handed out per window: 10/s")
        parser.add_argument("--no-global-concurrency", action="store_true", help="set-limit: no global concurrency")
        parser.add_argument("--no-rate-limit", action="store_true", help="set-limit: no rate limit")
        parser.add_argument("--json", action="store_true", help="list: print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        action, name = options["action"], options["queue"]
        try:
            if action != "set-limit":
                given = [f"--{o.replace('_', '-')}" for o in SET_OPTIONS if options[o] not in (None, False)]
                if given:
                    raise CommandError(f"{', '.join(given)} go(es) with set-limit, not {action}")
            if action == "list":
                self._list([get_queue(name)] if name else [get_queue(n) for n in get_settings().queues], options)
                return
            if not name:
                raise CommandError(f"{action} needs the name of a queue")
            queue = get_queue(name)
            if action == "reset-limit":
                if not limits_view(queue).overridden:
                    self.stdout.write(
                        safe_text(f"{queue.queue_name}: nothing to reset, the limits follow the settings")
                    )
                    return
                change = change_limits(queue, who=who(), reset=True)
            else:
                change = change_limits(queue, who=who(), **_new_limits(options))
            self.stdout.write(safe_text(f"{queue.queue_name}: {change.message}"))
            self._print(limits_view(queue))
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(safe_text(exc)) from exc
        except RedisError as exc:
            raise CommandError(safe_text(f"Redis unavailable: {exc}")) from exc

    def _list(self, queues: list[Any], options: dict[str, Any]) -> None:
        views = [limits_view(q) for q in queues]
        if options["json"]:
            self.stdout.write(safe_json({"queues": [v.as_dict() for v in views]}, indent=2, sort_keys=True))
            return
        for view in views:
            self._print(view)

    def _print(self, view: LimitsView) -> None:
        # Who changed a limit is stored text: printed escaped, as all of it.
        lines = [
            f"{view.queue}",
            f"    global concurrency {view.global_concurrency} ({view.concurrency_source}): {view.slots}",
            f"    rate limit {view.rate_limit} ({view.rate_source})" + (f": {view.rate_use}" if view.rate_use else ""),
        ]
        if view.keys_waiting:
            lines.append(f"    {view.keys_waiting}")
        if view.last_change:
            lines.append(f"    last changed by {view.last_change['who']}")
        if view.unreadable:
            lines.append(f"    {view.unreadable}")
        for line in lines:
            self.stdout.write(safe_text(line))


def _new_limits(options: dict[str, Any]) -> dict[str, Any]:
    """set-limit's options as change_limits() takes them."""
    if options["global_concurrency"] is not None and options["no_global_concurrency"]:
        raise CommandError("give --global-concurrency or --no-global-concurrency, not both")
    if options["rate_limit"] is not None and options["no_rate_limit"]:
        raise CommandError("give --rate-limit or --no-rate-limit, not both")
    new: dict[str, Any] = {}
    if options["global_concurrency"] is not None:
        new.update(set_concurrency=True, global_concurrency=parse_concurrency(options["global_concurrency"]))
    elif options["no_global_concurrency"]:
        new.update(set_concurrency=True, global_concurrency=0)
    if options["rate_limit"] is not None:
        if not options["rate_limit"].strip():
            raise CommandError("--rate-limit needs a rate like 10/s (--no-rate-limit for none)")
        new.update(set_rate=True, rate=parse_rate_limit(options["rate_limit"]))
    elif options["no_rate_limit"]:
        new.update(set_rate=True, rate=None)
    if not new:
        raise CommandError(
            "set-limit needs --global-concurrency N, --rate-limit RATE, --no-global-concurrency or --no-rate-limit"
        )
    return new


def who() -> str:
    """Who the limits log says made a change from here."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME, no passwd entry (a container): still worth recording
        user = "unknown user"
    return f"{user} (manage.py jobq_queues)"
