"""The admin's change of a queue's flow limits (global concurrency, rate limit):
a form on the overview, POST only, for staff with the manage_jobs permission
(AdminPage: 403 without it; admin_site.admin_view checks the CSRF token).

A change is a run-time override kept in Redis until reset (engine/limits.py);
the engine records it with the user's name, and so does the Django admin log
(a LogEntry on the JobQueue "model", the queue's name as its object id), so
the admin's own history shows who changed which limit from what to what.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from .admin_views import AdminPage
from .engine.limits import read_state
from .engine.queue import RedisJobQueue
from .flow_limits import Change, change_limits, parse_concurrency, parse_rate_limit
from .models import JobQueue

# LogEntry.object_repr's length.
REPR_LIMIT = 200


class LimitsAction(AdminPage):
    """POST action=set (global_concurrency, rate_limit; blank for no limit)
    or action=reset (back to the settings' values); then back to the
    overview, with a message."""

    manage_only = True
    http_method_names = ["post"]

    def post(self, request: HttpRequest, queue: str) -> HttpResponse:
        q = self.queue(queue)
        back = HttpResponseRedirect(reverse("admin:django_jobqueue_jobqueue_changelist"))
        action = request.POST.get("action", "")
        if action == "reset":
            if not read_state(q.client, q.keys, q.limits, log=1).overridden:
                messages.info(request, f"The limits of {queue} already follow the settings: nothing to reset.")
                return back
            change = change_limits(q, who=request.user.get_username(), reset=True)
        elif action == "set":
            try:
                cap = parse_concurrency(request.POST.get("global_concurrency", ""))
                rate = parse_rate_limit(request.POST.get("rate_limit", ""))
            except ValueError as exc:
                messages.error(request, f"The limits of {queue} are left as they were: {exc}.")
                return back
            # Only what differs from the limits in force becomes an override:
            # a limit left as it was keeps following the settings.
            now = read_state(q.client, q.keys, q.limits, log=1).effective
            set_cap, set_rate = cap != now.global_concurrency, rate != now.rate
            if not (set_cap or set_rate):
                messages.info(request, f"The limits of {queue} are already so: nothing changed.")
                return back
            change = change_limits(
                q,
                who=request.user.get_username(),
                global_concurrency=cap,
                rate=rate,
                set_concurrency=set_cap,
                set_rate=set_rate,
            )
        else:
            messages.error(request, "Unknown action.")
            return back
        if change.changed:
            log_change(request, q, change)
            messages.success(request, f"Limits of {queue}: {change.message}. Workers follow at their next claim.")
        else:
            messages.info(request, f"Limits of {queue}: {change.message}.")
        return back


def log_change(request: HttpRequest, queue: RedisJobQueue, change: Change) -> Any:
    """The change in the Django admin log. JobQueue has no table: the log
    entry names it by content type only, and the queue by its name."""
    user_pk = request.user.pk
    if user_pk is None:  # only signed-in staff get here (admin_site.admin_view)
        raise PermissionDenied
    content_type = ContentType.objects.get_for_model(JobQueue, for_concrete_model=False)
    return LogEntry.objects.create(
        user_id=user_pk,
        content_type_id=content_type.pk,
        object_id=queue.queue_name,
        object_repr=f"queue {queue.queue_name}"[:REPR_LIMIT],
        action_flag=CHANGE,
        change_message=f"Changed the flow limits: {change.message}.",
    )
