"""The admin's Schedules page: every periodic job's schedule, its next run,
its latest runs and their outcome; pause, resume and run-now for users with
the manage permission (POST, with the admin's CSRF check)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from .admin_views import TEMPLATES, AdminPage, can_manage, job_url
from .api import get_queue
from .engine.schedules import Schedule, ScheduleError, ScheduleStore
from .exceptions import ConfigurationError
from .schedules import all_schedules

ACTIONS = ("pause", "resume", "run-now")


class SchedulesPage(AdminPage):
    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            schedules = all_schedules()
        except ConfigurationError as exc:
            context = self.context(request, title="Schedules", rows=[], problem=str(exc))
            return TemplateResponse(request, TEMPLATES + "schedules.html", context)
        rows = [self._row(s) for s in schedules]
        return TemplateResponse(
            request, TEMPLATES + "schedules.html", self.context(request, title="Schedules", rows=rows)
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        back = reverse("admin:django_jobqueue_schedules")
        if not can_manage(request.user):
            messages.error(request, "You may look at the schedules, not change them.")
            return HttpResponseRedirect(back)
        action, name = request.POST.get("action", ""), request.POST.get("name", "")
        try:
            schedules = {s.name: s for s in all_schedules()}
        except ConfigurationError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(back)
        if action not in ACTIONS or name not in schedules:
            messages.error(request, "Unknown action or schedule.")
            return HttpResponseRedirect(back)
        schedule = schedules[name]
        store = ScheduleStore(get_queue(schedule.queue))
        if action == "pause":
            store.pause(name)
            messages.success(request, f"Schedule {name} paused: its ticks are passed over until it is resumed.")
        elif action == "resume":
            store.resume(name)
            messages.success(request, f"Schedule {name} resumed.")
        else:
            try:
                ids = store.run_now(schedule, store.server_now_ms())
            except ScheduleError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(back)
            if ids:
                messages.success(request, f"Schedule {name}: enqueued {', '.join(ids)}.")
            else:
                why = "paused, its last run unfinished, or a worker took its tick at that moment"
                messages.warning(request, f"Schedule {name}: nothing enqueued ({why}).")
        return HttpResponseRedirect(back)

    @staticmethod
    def _row(schedule: Schedule) -> dict[str, Any]:
        store = ScheduleStore(get_queue(schedule.queue))
        state = store.state(schedule.name)
        next_ms = state.get("next_ms")
        return {
            "name": schedule.name,
            "job": schedule.job,
            "queue": schedule.queue,
            "calendar": f"cron {schedule.cron} ({schedule.timezone})"
            if schedule.cron is not None
            else f"every {(schedule.every_ms or 0) / 1000:g} s",
            "overlap": schedule.overlap,
            "catch_up": schedule.catch_up,
            "next_ms": int(next_ms) if next_ms and next_ms != "inf" else None,
            "paused": bool(state.get("paused") or state.get("defined_paused")),
            "defined_paused": bool(state.get("defined_paused")),
            "fired": int(state.get("fired", 0)),
            "skipped": int(state.get("skipped", 0)),
            "last_skip": state.get("last_skip", ""),
            "runs": [
                (job_id, status, job_url(schedule.queue, job_id)) for job_id, status in store.recent_runs(schedule.name)
            ],
            "started": bool(state),
        }
