"""The admin pages: class-based views that admin.py wraps in ``admin_site.admin_view``
(which sends anonymous and non-staff users to the login page and checks CSRF).

Reading needs the ``view_jobs`` (or ``manage_jobs``) permission, changing needs
``manage_jobs``; without it: 403. Changes are POST only, and the destructive
ones (delete, purge, retry all, requeueing a running job) show a confirmation
page first. The queue in the URL decides which keys are read or changed, and
only configured queues are served: nothing here builds a key from what the
browser sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View
from redis.exceptions import RedisError

from . import inspect
from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .keys import GlobalKeys
from .models import JobQueue
from .queue import Outcome, RedisJobQueue
from .queue_ops import Refusal

PERM_VIEW = "django_jobqueue.view_jobs"
PERM_MANAGE = "django_jobqueue.manage_jobs"
PER_PAGE_CHOICES = (25, 50, 100, 200)
MAX_IDS_PER_POST = inspect.MAX_PER_PAGE
RETRY_ALL_LIMIT = 10_000  # per click: an HTTP request must end
TEMPLATES = "admin/django_jobqueue/"
# Fields the detail page shows in their own places; the rest go to "other fields".
SHOWN_FIELDS = frozenset(
    {"id", "name", "queue", "status", "attempts", "max_attempts", "payload", "result", "last_error"}
    | {"last_traceback", "errors", "worker"}
)


def can_view(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and (user.has_perm(PERM_VIEW) or user.has_perm(PERM_MANAGE)))


def can_manage(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(PERM_MANAGE))


@dataclass(frozen=True)
class Action:
    label: str
    confirm: bool  # destructive: a confirmation page first
    needs_ids: bool


ACTIONS = {
    "retry": Action("Retry", confirm=False, needs_ids=True),
    "requeue": Action("Requeue (run again)", confirm=False, needs_ids=True),
    "delete": Action("Delete", confirm=True, needs_ids=True),
    "retry_all": Action("Retry all failed jobs", confirm=True, needs_ids=False),
    "purge": Action("Purge the list", confirm=True, needs_ids=False),
    "sweep": Action("Run a reclaim sweep", confirm=False, needs_ids=False),
    # Asks first when one of the jobs is running (its claim is revoked): see ActionView._running().
    "requeue_now": Action("Requeue now", confirm=False, needs_ids=True),
    "pause": Action("Pause", confirm=False, needs_ids=False),
    "resume": Action("Resume", confirm=False, needs_ids=False),
}
# The actions on selected rows each list offers.
LIST_ACTIONS = {
    "scheduled": ("requeue_now", "delete"),
    "pending": ("delete",),
    "processing": ("requeue_now",),
    "completed": ("requeue", "delete"),
    "failed": ("retry", "delete"),
}


# Why a job was left as it was, for the engine's refusals (queue_ops.Refusal).
REFUSALS = {
    Refusal.AT_MOST_ONCE_RUNNING: (
        "at-most-once and running: requeueing would run it twice (it is marked lost if its worker dies)"
    ),
    Refusal.UNIQUE_KEY_HELD: (
        "another unfinished job holds its unique key: replaying it would make two (wait for that job to finish)"
    ),
}

# pause / resume: what each direction stops, and what each state means.
PAUSE_DIRECTIONS = {"all": "enqueueing and claiming", "in": "enqueueing", "out": "claiming"}
PAUSED_STATES = {
    "none": "running",
    "in": "paused for enqueueing (workers still claim)",
    "out": "paused for claiming (enqueue still adds jobs)",
    "all": "paused for enqueueing and claiming",
}


class AdminPage(View):
    """Permission checks, the admin's context, and a readable page when Redis is down."""

    admin_site: Any = None
    manage_only = False

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_view(request.user) or (self.manage_only and not can_manage(request.user)):
            raise PermissionDenied
        try:
            return super().dispatch(request, *args, **kwargs)
        except RedisError as exc:
            context = self.context(request, title="Redis is unavailable", error=str(exc))
            return TemplateResponse(request, TEMPLATES + "unavailable.html", context, status=503)

    def context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": JobQueue._meta,
            "app_label": JobQueue._meta.app_label,
            "can_manage": can_manage(request.user),
            **extra,
        }

    @staticmethod
    def queue(name: str) -> RedisJobQueue:
        if name not in get_settings().queues:
            raise Http404("no such queue")
        return get_queue(name)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# -------------------------------------------------------------- overview


def overview_data() -> dict[str, Any]:
    settings = get_settings()
    client = get_client()
    now = inspect.server_time_ms(client)
    queues = []
    retained = {}
    for name in settings.queues:
        queue = get_queue(name)
        stats = queue.stats()
        counters = {n: stats.get(f"{n}_total", 0) for n in inspect.SAMPLED_COUNTERS}
        samples = inspect.sample_counters(queue, counters, now)
        retained[name] = inspect.retained_memory(queue)
        queues.append(
            {
                "name": name,
                "stats": stats,
                "depths": [(which, stats.get(f"{which}_depth", 0)) for which in inspect.LISTS],
                "counters": [(k[: -len("_total")], v) for k, v in stats.items() if k.endswith("_total")],
                "throughput": inspect.throughput(samples, counters, now),
                "kept": _kept(retained[name]),
            }
        )
    lapse_ms = settings.worker_timeout_seconds * 1000
    workers = inspect.workers(client, GlobalKeys(settings.key_prefix, settings.cluster))
    for worker in workers:
        worker["beat_age_ms"] = max(0, now - worker["beat_ms"])
        worker["lapsed"] = worker["beat_age_ms"] > lapse_ms
        # Link only what the admin serves: configured queues, well-formed IDs.
        worker["jobs"] = [(q, i, q in settings.queues and inspect.valid_job_id(i)) for q, i in worker["jobs"]]
    return {
        "queues": queues,
        "workers": workers,
        "now_ms": now,
        "lists": inspect.LISTS,
        "retention_problem": inspect.retention_problem(retained, inspect.maxmemory(client)),
    }


def _kept(lists: dict[str, inspect.Retained]) -> dict[str, Any]:
    """The memory a queue's finished jobs hold, for the overview (an estimate)."""
    parts = []
    for r in lists.values():
        bound = "no bound" if r.bound is None else f"{r.bound:,}"
        parts.append(
            f"{r.which}: {r.depth:,} of {bound} x {inspect.human_bytes(r.job_bytes)}"
            + ("" if r.sampled else " (assumed: nothing to measure)")
        )
    return {
        "total": inspect.human_bytes(sum(r.held_bytes for r in lists.values())),
        "detail": "; ".join(parts),
    }


class OverviewPage(AdminPage):
    def get(self, request: HttpRequest) -> HttpResponse:
        context = self.context(request, title="Job queues", **overview_data())
        return TemplateResponse(request, TEMPLATES + "overview.html", context)


class OverviewJSON(AdminPage):
    """What the overview's refresh fetches: its live parts, rendered (and so
    escaped) by the same templates as the page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        context = {"can_manage": can_manage(request.user), **overview_data()}
        parts = {name: render_to_string(f"{TEMPLATES}_{name}.html", context, request) for name in ("queues", "workers")}
        return JsonResponse({"parts": parts, "now_ms": context["now_ms"]})


# ----------------------------------------------------------------- lists


def summary_data(queue: RedisJobQueue) -> dict[str, Any]:
    stats = queue.stats()
    return {
        "queue_name": queue.queue_name,
        "stats": stats,
        "depths": [(w, stats[f"{w}_depth"]) for w in inspect.LISTS],
        "paused": stats.get("paused", "none"),
    }


class ListPage(AdminPage):
    def get(self, request: HttpRequest, queue: str, which: str) -> HttpResponse:
        q = self.queue(queue)
        if which not in inspect.LISTS:
            raise Http404("no such list")
        per_page = _int(request.GET.get("per_page"), PER_PAGE_CHOICES[0])
        if per_page not in PER_PAGE_CHOICES:
            per_page = PER_PAGE_CHOICES[0]
        page = inspect.page(q, which, _int(request.GET.get("page"), 1), per_page)
        context = self.context(
            request,
            title=f"{queue}: {which}",
            page=page,
            which=which,
            per_page_choices=PER_PAGE_CHOICES,
            row_actions=[(a, ACTIONS[a].label) for a in LIST_ACTIONS[which]],
            purgeable=which in inspect.PURGEABLE,
            **summary_data(q),
        )
        return TemplateResponse(request, TEMPLATES + "list.html", context)


class SummaryJSON(AdminPage):
    def get(self, request: HttpRequest, queue: str) -> HttpResponse:
        q = self.queue(queue)
        which = request.GET.get("list", "")
        context = {**summary_data(q), "which": which if which in inspect.LISTS else ""}
        parts = {name: render_to_string(f"{TEMPLATES}_{name}.html", context, request) for name in ("tabs", "paused")}
        return JsonResponse({"parts": parts})


# ------------------------------------------------------------------ jobs


def job_context(queue: RedisJobQueue, fields: dict[str, str]) -> dict[str, Any]:
    status = fields.get("status", "")
    # A running at-most-once job is never handed out again (requeue_now refuses it).
    requeueable = status == "scheduled" or (status == "processing" and fields.get("delivery") != "at-most-once")
    times = sorted(
        ((k, v) for k, v in fields.items() if k.endswith(("_at_ms", "_until_ms")) and v.isdigit()),
        key=lambda kv: int(kv[1]),
    )
    return {
        "queue_name": queue.queue_name,
        "job": fields,
        "times": [(k.removesuffix("_ms").replace("_", " "), v) for k, v in times],
        "errors": inspect.decode_errors(fields.get("errors")),
        "other_fields": sorted(
            (k, v) for k, v in fields.items() if k not in SHOWN_FIELDS and not k.endswith(("_at_ms", "_until_ms"))
        ),
        # (action, button label, destructive)
        "job_actions": [
            (a, ACTIONS[a].label + ("…" if confirm else ""), a == "delete")
            for a, ok, confirm in (
                ("retry", status in ("failed", "expired"), False),
                ("requeue", status == "completed", False),
                ("requeue_now", requeueable, status == "processing"),
                ("delete", status != "processing", True),
            )
            if ok
        ],
    }


class JobPage(AdminPage):
    def get(self, request: HttpRequest, queue: str, job_id: str) -> HttpResponse:
        q = self.queue(queue)
        fields = inspect.get_job(q, job_id)
        if fields is None:
            context = self.context(request, title="No such job", queue_name=queue, job_id=job_id)
            return TemplateResponse(request, TEMPLATES + "job_missing.html", context, status=404)
        context = self.context(request, title=f"Job {job_id}", **job_context(q, fields))
        return TemplateResponse(request, TEMPLATES + "job.html", context)


class JobJSON(AdminPage):
    def get(self, request: HttpRequest, queue: str, job_id: str) -> HttpResponse:
        q = self.queue(queue)
        fields = inspect.get_job(q, job_id)
        if fields is None:
            return JsonResponse({"parts": {}, "missing": True}, status=404)
        html = render_to_string(TEMPLATES + "_job_status.html", job_context(q, fields), request)
        return JsonResponse({"parts": {"status": html}})


class SearchPage(AdminPage):
    """Find a job by ID: in one queue (?queue=), or in every queue."""

    def get(self, request: HttpRequest) -> HttpResponse:
        job_id = request.GET.get("q", "").strip()
        queue_name = request.GET.get("queue", "")
        names = [queue_name] if queue_name else list(get_settings().queues)
        queues = [self.queue(n) for n in names]
        found = inspect.find_job(queues, job_id) if job_id else []
        if len(found) == 1:
            return HttpResponseRedirect(reverse("admin:django_jobqueue_job", args=[found[0], job_id]))
        context = self.context(request, title="Search", job_id=job_id, queue_name=queue_name, found=found)
        return TemplateResponse(request, TEMPLATES + "search.html", context)


# --------------------------------------------------------------- actions


class ActionView(AdminPage):
    """POST: run one action on one queue, after a confirmation page for the
    destructive ones; then back to where it came from, with a message."""

    manage_only = True
    http_method_names = ["post"]

    def post(self, request: HttpRequest, queue: str) -> HttpResponse:
        q = self.queue(queue)
        name = request.POST.get("action", "")
        which = request.POST.get("list", "")
        which = which if which in inspect.LISTS else ""
        ids = [i for i in request.POST.getlist("ids") if inspect.valid_job_id(i)][:MAX_IDS_PER_POST]
        direction = request.POST.get("direction", "all")
        back = self._back(request, queue, which, ids)
        action = ACTIONS.get(name)
        if action is None:
            messages.error(request, "Unknown action.")
            return HttpResponseRedirect(back)
        if name in ("pause", "resume") and direction not in PAUSE_DIRECTIONS:
            messages.error(request, "Unknown direction: pause or resume enqueueing (in), claiming (out) or both (all).")
            return HttpResponseRedirect(back)
        if action.needs_ids and not ids:
            messages.warning(request, "Select the jobs to act on first.")
            return HttpResponseRedirect(back)
        if name == "purge" and which not in inspect.PURGEABLE:
            messages.error(request, "That list cannot be purged: its jobs are running.")
            return HttpResponseRedirect(back)
        running = self._running(q, name, ids)
        if (action.confirm or running) and request.POST.get("confirm") != "yes":
            context = self.context(
                request,
                title="Are you sure?",
                queue_name=queue,
                action_name=name,
                action=action,
                which=which,
                ids=ids,
                back_to=request.POST.get("back", ""),
                back_url=back,
                count=len(ids) if action.needs_ids else self._count(q, name, which),
                running=running,
                retry_all_limit=RETRY_ALL_LIMIT,
            )
            return TemplateResponse(request, TEMPLATES + "confirm.html", context)
        self._run(request, q, name, which, ids, direction)
        if name == "delete" and request.POST.get("back") == "job":
            back = reverse("admin:django_jobqueue_list", args=[queue, which or "pending"])
        return HttpResponseRedirect(back)

    @staticmethod
    def _back(request: HttpRequest, queue: str, which: str, ids: list[str]) -> str:
        if request.POST.get("back") == "job" and len(ids) == 1:
            return reverse("admin:django_jobqueue_job", args=[queue, ids[0]])
        if which:
            return reverse("admin:django_jobqueue_list", args=[queue, which])
        return reverse("admin:django_jobqueue_jobqueue_changelist")

    @staticmethod
    def _running(queue: RedisJobQueue, name: str, ids: list[str]) -> int:
        """How many of the jobs requeue_now would take from a worker: those ask
        first. Running at-most-once jobs do not count: requeue_now refuses them."""
        if name != "requeue_now" or not ids:
            return 0
        pipe = queue.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(queue.keys.job(job_id), "status", "delivery")
        return sum(
            1
            for status, delivery in pipe.execute()
            if status in ("processing", b"processing") and delivery not in ("at-most-once", b"at-most-once")
        )

    @staticmethod
    def _count(queue: RedisJobQueue, name: str, which: str) -> int:
        if name == "retry_all":
            return inspect.list_length(queue, "failed")
        return inspect.list_length(queue, which) if which else 0

    @staticmethod
    def _run(request: HttpRequest, q: RedisJobQueue, name: str, which: str, ids: list[str], direction: str) -> None:
        where = q.queue_name
        if name in ("retry", "requeue", "requeue_now", "delete"):
            # The engine call: retry (also "run a completed job again"), requeue_now, delete.
            op = {"retry": "retry", "requeue": "retry", "requeue_now": "requeue", "delete": "delete"}[name]
            outcomes = inspect.apply(q, op, ids)
            done = len(outcomes.get(Outcome.OK, []))
            verb = {"retry": "Retried", "requeue": "Requeued", "requeue_now": "Requeued", "delete": "Deleted"}[name]
            now = " to run now" if name == "requeue_now" else ""
            messages.success(request, f"{verb} {done} job(s) of {where}{now}.")
            refused = outcomes.get(Outcome.NOT_OWNER, [])
            missing = outcomes.get(Outcome.MISSING, [])
            if refused:
                why = {"delete": "running", "requeue_now": "already finished"}.get(name, "not finished")
                messages.warning(request, f"{len(refused)} job(s) left alone: {why} ({', '.join(refused[:10])}).")
            for refusal, why in REFUSALS.items():
                left = outcomes.get(refusal, [])
                if left:
                    messages.warning(request, f"{len(left)} job(s) left alone: {why} ({', '.join(left[:10])}).")
            if missing:
                messages.warning(request, f"{len(missing)} job(s) no longer exist ({', '.join(missing[:10])}).")
        elif name == "retry_all":
            result = inspect.retry_all_failed(q, RETRY_ALL_LIMIT)
            messages.success(request, f"Retried {result.done} failed job(s) of {where}.")
            if result.skipped:
                messages.warning(request, f"{result.skipped} job(s) could not be retried and stay on the failed list.")
            if result.left > result.skipped:
                messages.warning(request, f"{result.left} job(s) still on the failed list: run it again for more.")
        elif name == "purge":
            result = inspect.purge(q, which)
            messages.success(request, f"Purged the {which} list of {where}: {result.done} job(s) deleted.")
            if result.skipped:
                messages.info(request, f"{result.skipped} stale id(s) without a matching job were dropped too.")
        elif name in ("pause", "resume"):
            state = q.pause(direction) if name == "pause" else q.resume(direction)
            verb = "Paused" if name == "pause" else "Resumed"
            now_is = PAUSED_STATES.get(state, state)
            messages.success(request, f"{verb} {PAUSE_DIRECTIONS[direction]} on {where}: the queue is now {now_is}.")
        elif name == "sweep":
            sweep = q.sweep()
            messages.success(
                request,
                f"Sweep of {where}: {len(sweep.reclaimed)} reclaimed, {len(sweep.dead_lettered)} dead-lettered, "
                f"{len(sweep.expired)} expired, {sweep.promoted} scheduled job(s) promoted.",
            )
