from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from django_jobqueue.api import get_queue
from django_jobqueue.engine.schedules import Schedule, ScheduleError, ScheduleStore
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.schedules import all_schedules
from django_jobqueue.terminal import safe_json, safe_text

ACTIONS = ("list", "pause", "resume", "run-now")


class Command(BaseCommand):
    help = (
        "List the periodic jobs' schedules (next and last run, counts, paused or not), or pause, "
        "resume or run one now (run-now respects its overlap rule and pause)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", nargs="?", default="list", choices=ACTIONS)
        parser.add_argument("name", nargs="?", help="the schedule (pause, resume, run-now)")
        parser.add_argument("--json", action="store_true", help="list: print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        action, name = options["action"], options["name"]
        try:
            schedules = {s.name: s for s in all_schedules()}
            if action == "list":
                self._list(schedules, as_json=options["json"])
                return
            if not name:
                raise CommandError(f"{action} needs the name of a schedule")
            if name not in schedules:
                known = ", ".join(sorted(schedules)) or "none"
                raise CommandError(safe_text(f"no schedule named {name!r} (defined: {known})"))
            self._act(action, schedules[name])
        except (JobQueueError, LookupError, ScheduleError) as exc:
            raise CommandError(safe_text(exc)) from exc
        except RedisError as exc:
            raise CommandError(safe_text(f"Redis unavailable: {exc}")) from exc

    def _store(self, schedule: Schedule) -> ScheduleStore:
        # Reads and changes the state the workers wrote; never writes a
        # definition (this process may run another release than the workers).
        return ScheduleStore(get_queue(schedule.queue))

    def _act(self, action: str, schedule: Schedule) -> None:
        store = self._store(schedule)
        if action == "pause":
            store.pause(schedule.name)
            self.stdout.write(f"paused {safe_text(schedule.name)}")
        elif action == "resume":
            store.resume(schedule.name)
            self.stdout.write(f"resumed {safe_text(schedule.name)}")
        else:
            ids = store.run_now(schedule, store.server_now_ms())
            if ids:
                self.stdout.write(f"enqueued {', '.join(ids)}")
            else:
                state = store.state(schedule.name)
                why = "its owed run is queued" if state.get("owed_ms") else state.get("last_skip", "not enqueued")
                self.stdout.write(f"not enqueued: {safe_text(why)} (overlap {schedule.overlap})")

    def _list(self, schedules: dict[str, Schedule], *, as_json: bool) -> None:
        rows = []
        for schedule in schedules.values():
            store = self._store(schedule)
            state = store.state(schedule.name)
            rows.append(
                {
                    "name": schedule.name,
                    "job": schedule.job,
                    "queue": schedule.queue,
                    "calendar": _calendar(schedule),
                    "next": _when(state.get("next_ms"), schedule),
                    "last_run": _when(state.get("last_tick_ms"), schedule),
                    "last_job": state.get("last_job"),
                    "fired": int(state.get("fired", 0)),
                    "skipped": int(state.get("skipped", 0)),
                    "last_skip": state.get("last_skip"),
                    "paused": bool(state.get("paused") or state.get("defined_paused")),
                }
            )
        if as_json:
            self.stdout.write(safe_json({"schedules": rows}, indent=2, sort_keys=True))
            return
        if not rows:
            self.stdout.write("no schedules defined")
            return
        for row in rows:
            status = "paused" if row["paused"] else "active"
            self.stdout.write(
                safe_text(
                    f"{row['name']}  [{status}]  {row['job']} on {row['queue']}, {row['calendar']}\n"
                    f"    next {row['next'] or '-'}  last {row['last_run'] or '-'} ({row['last_job'] or 'no run'})"
                    f"  fired {row['fired']}  skipped {row['skipped']}"
                    + (f" (last: {row['last_skip']})" if row["last_skip"] else "")
                )
            )


def _calendar(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    assert schedule.every_ms is not None
    return f"every {schedule.every_ms / 1000:g} s"


def _when(ms: str | None, schedule: Schedule) -> str | None:
    if not ms or ms == "inf":
        return None
    return datetime.fromtimestamp(int(ms) / 1000, schedule.zone).isoformat(timespec="seconds")
