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

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.views import View
from redis.exceptions import RedisError

from . import charts
from .api import get_queue
from .conf import get_settings
from .connection import get_client
from .engine import browse, bulk, samples
from .engine.exceptions import JobNotCancellable, JobNotFound
from .engine.keys import GlobalKeys
from .engine.progress import Progress
from .engine.queue import RedisJobQueue
from .engine.queue_ops import Cancellation, Refusal
from .engine.replies import Outcome
from .flow_limits import limits_view
from .models import JobQueue
from .templatetags.jobqueue_admin import PRETTY_LIMIT, SHORT_LIMIT, cut, json_preview

if TYPE_CHECKING:
    # Every page answers with an HttpResponse (so as_view() is typed so);
    # django-stubs' View is generic only for type checkers.
    _PageView = View[HttpResponse]
else:
    _PageView = View

PERM_VIEW = "django_jobqueue.view_jobs"
PERM_MANAGE = "django_jobqueue.manage_jobs"
PER_PAGE_CHOICES = (25, 50, 100, 200)
MAX_IDS_PER_POST = browse.MAX_PER_PAGE
RETRY_ALL_LIMIT = 10_000  # per click: an HTTP request must end
TEMPLATES = "admin/django_jobqueue/"
# What one page shows of data that can grow without bound: the rest is counted, not shown.
WORKERS_SHOWN = 200
ERROR_LOG_SHOWN = 100  # the newest entries of a job's error log
OTHER_FIELDS_SHOWN = 100
TIMES_SHOWN = 50
NAME_LIMIT = 200  # a field name, an id, a worker's host or state
INTEGER = re.compile(r"-?[0-9]{1,4000}")  # int() reads up to 4300 digits
# Fields the detail page shows in their own places; the rest go to "other fields".
SHOWN_FIELDS = frozenset(
    {"id", "name", "queue", "status", "attempts", "max_attempts", "payload", "result", "last_error"}
    | {"last_traceback", "errors", "worker"}
    | {"progress", "progress_message", "progress_attempt"}
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
    # A waiting job ends cancelled; a running one is asked to stop (docs/cancellation.md).
    "cancel": Action("Cancel", confirm=False, needs_ids=True),
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


class AdminPage(_PageView):
    """Permission checks, the admin's context, and a readable page when Redis is down."""

    admin_site: Any = None
    manage_only = False

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
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


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _integer(text: Any) -> int | None:
    """A stored count or time in ms, or None when the text is not one."""
    return int(text) if isinstance(text, str) and INTEGER.fullmatch(text) else None


def job_url(queue: str, job_id: str) -> str | None:
    """The job page of ``job_id``, or None for an ID that page cannot serve:
    one get_job() refuses, or one no URL can carry (a "/" splits the path;
    "." and ".." are resolved away by browsers)."""
    if not browse.valid_job_id(job_id) or "/" in job_id or not job_id.strip("."):
        return None
    try:
        return reverse("admin:django_jobqueue_job", args=[queue, job_id])
    except NoReverseMatch:
        return None


# ----------------------------------------------------------- queue stats


def queue_stats(queue: RedisJobQueue) -> dict[str, Any]:
    """queue.stats(), with "broken": what could not be read (nothing, usually).
    When the stats hash holds something stats() cannot read (a counter that is
    not a number), the depths and the counters that can be read, and the rest
    named in "broken"."""
    try:
        return {**queue.stats(), "broken": []}
    except (ValueError, TypeError, OverflowError) as exc:
        return partial_stats(queue, exc)


def partial_stats(queue: RedisJobQueue, problem: Exception) -> dict[str, Any]:
    """The part of queue.stats() that can be read, field by field (the age of
    the oldest pending job is left out)."""
    k = queue.keys
    pipe = queue.client.pipeline(transaction=False)
    for key in (k.pending, k.processing, k.claiming, k.completed, k.failed):
        pipe.llen(key)
    pipe.zcard(k.scheduled)
    pipe.hgetall(k.stats)
    pipe.get(k.paused)
    pending, processing, claiming, completed, failed, scheduled, counters, paused = pipe.execute()
    stats: dict[str, Any] = {
        "queue": queue.queue_name,
        "pending_depth": pending,
        "processing_depth": processing + claiming,
        "completed_depth": completed,
        "failed_depth": failed,
        "scheduled_depth": scheduled,
        "visibility_ms": queue.visibility_ms,
        "oldest_pending_age_ms": None,
        "paused": _text(paused) if paused else "none",
        "broken": [],
        "broken_counters": [],
    }
    for name, value in sorted((_text(n), _text(v)) for n, v in counters.items()):
        number = _integer(value)
        if number is None:
            stats["broken_counters"].append(name)
            stats["broken"].append(f"counter {cut(name, NAME_LIMIT)!r} holds {cut(value, NAME_LIMIT)!r}, not a number")
        else:
            stats[f"{name}_total"] = number
    if not stats["broken"]:
        stats["broken"].append(f"the statistics could not be read in full: {cut(str(problem), NAME_LIMIT)}")
    return stats


# -------------------------------------------------------------- overview


# The charts' closed buckets, read again every 5 minutes rather than on every
# 2-second refresh of every open overview (engine/samples.py BucketCache).
CHART_BUCKETS = samples.BucketCache()


def overview_data(span: str = "1h") -> dict[str, Any]:
    """What the overview shows; its charts over ``span`` ("1h" or "24h")."""
    settings = get_settings()
    client = get_client()
    now = browse.server_time_ms(client)
    queues: list[dict[str, Any]] = []
    retained = {}
    for name in settings.queues:
        queue = get_queue(name)
        stats = queue_stats(queue)
        retained[name] = browse.retained_memory(queue)
        queues.append(
            {
                "name": name,
                "stats": stats,
                "depths": [(which, stats.get(f"{which}_depth", 0)) for which in browse.LISTS],
                "counter_values": {k[: -len("_total")]: v for k, v in stats.items() if k.endswith("_total")},
                "throughput": _throughput(queue, stats, now),
                "kept": _kept(retained[name]),
                "limits": limits_view(queue),
                **_charts(queue, client, span, now),
            }
        )
    counter_names = _counter_columns(queues)
    for q in queues:
        broken = q["stats"].get("broken_counters", [])
        q["counters"] = [(n, q["counter_values"].get(n), n in broken) for n in counter_names]
    lapse_ms = settings.worker_timeout_seconds * 1000
    keys = GlobalKeys(settings.key_prefix, settings.cluster)
    return {
        "queues": queues,
        "counter_names": counter_names,
        "workers": worker_rows(client, keys, now, lapse_ms, settings.queues),
        "now_ms": now,
        "span": span,
        "spans": list(samples.SERIES),
        "lists": browse.LISTS,
        "retention_problem": browse.retention_problem(retained, browse.maxmemory(client)),
    }


def _charts(queue: RedisJobQueue, client: Any, span: str, now_ms: int) -> dict[str, Any]:
    points = samples.read_series(client, queue.keys, span, now_ms, CHART_BUCKETS)
    # What is not a count (written by hand) is left out of the charts, and said so.
    return {"charts": charts.queue_charts(points, span), "samples_unreadable": any(p.unreadable for p in points)}


def _counter_columns(queues: list[dict[str, Any]]) -> list[str]:
    """The counters table's columns: every counter of every queue (the same
    for all, unless a queue's stats could be read only in part)."""
    names: dict[str, None] = {}
    for q in queues:
        names.update(dict.fromkeys(q["counter_values"]))
        names.update(dict.fromkeys(q["stats"].get("broken_counters", [])))
    return list(names)


def _throughput(queue: RedisJobQueue, stats: dict[str, Any], now: int) -> list[dict[str, Any]]:
    """The queue's throughput; no rates (and no new sample) while its counters
    or its samples cannot be read."""
    unknown = [{"minutes": m, "seconds": None} for m in browse.THROUGHPUT_WINDOWS_MINUTES]
    if stats["broken"]:
        return unknown
    counters = {n: stats.get(f"{n}_total", 0) for n in browse.SAMPLED_COUNTERS}
    try:
        return browse.throughput(browse.sample_counters(queue, counters, now), counters, now)
    except (ValueError, TypeError, OverflowError, RecursionError):  # a corrupt sample
        stats["broken"].append("the throughput samples (stats:samples) are not what the admin writes")
        return unknown


def worker_rows(
    client: Any, keys: GlobalKeys, now: int, lapse_ms: float, queues: Collection[str]
) -> list[dict[str, Any]]:
    """The registered workers, most recent heartbeat first (at most
    WORKERS_SHOWN), each record read field by field: a field that cannot be
    read (not the JSON it should be, nested too deeply, a heartbeat that is not
    a time) is named in the worker's "broken" list and the rest is shown. The
    claim tokens a record holds are dropped here."""
    rows = []
    for wid, beat, record in browse.worker_records(client, keys, WORKERS_SHOWN):
        broken: list[str] = []
        row: dict[str, Any] = {"id": cut(wid, NAME_LIMIT), "broken": broken}
        for name in ("host", "pid", "concurrency", "state"):
            row[name] = cut(record.get(name, ""), NAME_LIMIT)
        row["started_at_ms"] = _integer(record.get("started_at_ms"))
        if math.isfinite(beat):
            row["beat_age_ms"] = max(0, now - int(beat))
            row["lapsed"] = row["beat_age_ms"] > lapse_ms
        else:
            row["beat_age_ms"], row["lapsed"] = None, False
            broken.append(f"heartbeat time {beat}")
        row["queues"] = _worker_queues(record.get("queues"), broken)
        row["jobs"] = _worker_jobs(record.get("jobs"), broken, queues)
        rows.append(row)
    return rows


def _json_list(name: str, text: str | None, broken: list[str]) -> list[Any]:
    """A field holding a JSON list; [] and a note in ``broken`` when it does not."""
    if text is None:
        return []
    try:
        value = json.loads(text)
    except RecursionError:
        broken.append(f"{name}: nested too deeply to read")
        return []
    except ValueError:
        broken.append(f"{name}: not JSON: {cut(text, NAME_LIMIT)}")
        return []
    if not isinstance(value, list):
        broken.append(f"{name}: not a list: {json_preview(value, NAME_LIMIT)}")
        return []
    return value


def _worker_queues(text: str | None, broken: list[str]) -> list[str]:
    names = []
    for name in _json_list("queues", text, broken)[:WORKERS_SHOWN]:
        if isinstance(name, str):
            names.append(cut(name, NAME_LIMIT))
        else:
            broken.append(f"queues: not a name: {json_preview(name, NAME_LIMIT)}")
    return names


def _worker_jobs(text: str | None, broken: list[str], queues: Collection[str]) -> list[tuple[str, str, str | None]]:
    """The jobs a worker runs, as (queue, id, job page URL or None): links only
    to what the admin serves (configured queues, IDs a URL can carry)."""
    jobs = []
    for entry in _json_list("jobs", text, broken)[:WORKERS_SHOWN]:
        if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], str) and isinstance(entry[1], str):
            queue, job_id = entry[0], entry[1]  # [queue, id, token]: no token
            url = job_url(queue, job_id) if queue in queues else None
            jobs.append((cut(queue, NAME_LIMIT), cut(job_id, NAME_LIMIT), url))
        else:
            broken.append(f"jobs: not [queue, id, token]: {json_preview(entry, NAME_LIMIT)}")
    return jobs


def _kept(lists: dict[str, browse.Retained]) -> dict[str, Any]:
    """The memory a queue's finished jobs hold, for the overview (an estimate)."""
    parts = []
    for r in lists.values():
        bound = "no bound" if r.bound is None else f"{r.bound:,}"
        parts.append(
            f"{r.which}: {r.depth:,} of {bound} x {browse.human_bytes(r.job_bytes)}"
            + ("" if r.sampled else " (assumed: nothing to measure)")
        )
    return {
        "total": browse.human_bytes(sum(r.held_bytes for r in lists.values())),
        "detail": "; ".join(parts),
    }


class OverviewPage(AdminPage):
    def get(self, request: HttpRequest) -> HttpResponse:
        context = self.context(request, title="Job queues", **overview_data(charts.span_from(request.GET.get("span"))))
        return TemplateResponse(request, TEMPLATES + "overview.html", context)


class OverviewJSON(AdminPage):
    """What the overview's refresh fetches: its live parts, rendered (and so
    escaped) by the same templates as the page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        context = {"can_manage": can_manage(request.user), **overview_data(charts.span_from(request.GET.get("span")))}
        parts = {
            name: render_to_string(f"{TEMPLATES}_{name}.html", context, request)
            for name in ("queues", "flow", "charts", "workers")
        }
        return JsonResponse({"parts": parts, "now_ms": context["now_ms"]})


# ----------------------------------------------------------------- lists


def summary_data(queue: RedisJobQueue) -> dict[str, Any]:
    stats = queue_stats(queue)
    return {
        "queue_name": queue.queue_name,
        "stats": stats,
        "depths": [(w, stats[f"{w}_depth"]) for w in browse.LISTS],
        "paused": stats.get("paused", "none"),
    }


class ListPage(AdminPage):
    def get(self, request: HttpRequest, queue: str, which: str) -> HttpResponse:
        q = self.queue(queue)
        if which not in browse.LISTS:
            raise Http404("no such list")
        per_page = _int(request.GET.get("per_page"), PER_PAGE_CHOICES[0])
        if per_page not in PER_PAGE_CHOICES:
            per_page = PER_PAGE_CHOICES[0]
        page = browse.page(q, which, _int(request.GET.get("page"), 1), per_page)
        for row in page.rows:
            _bound_row(queue, row)
        context = self.context(
            request,
            title=f"{queue}: {which}",
            page=page,
            which=which,
            per_page_choices=PER_PAGE_CHOICES,
            row_actions=[(a, ACTIONS[a].label) for a in LIST_ACTIONS[which]],
            purgeable=which in bulk.PURGEABLE,
            **summary_data(q),
        )
        return TemplateResponse(request, TEMPLATES + "list.html", context)


def _bound_row(queue: str, row: dict[str, Any]) -> None:
    """A list row made fit to show: its link (None for an ID the job page
    cannot serve), whether it can be selected, and every text cut."""
    job_id = row["id"]
    row["url"] = job_url(queue, job_id)
    row["selectable"] = browse.valid_job_id(job_id)  # what ActionView acts on
    for name, value in row.items():
        if isinstance(value, str):
            row[name] = cut(value, SHORT_LIMIT if name == "last_error" else NAME_LIMIT)


class SummaryJSON(AdminPage):
    def get(self, request: HttpRequest, queue: str) -> HttpResponse:
        q = self.queue(queue)
        which = request.GET.get("list", "")
        context = {**summary_data(q), "which": which if which in browse.LISTS else ""}
        parts = {name: render_to_string(f"{TEMPLATES}_{name}.html", context, request) for name in ("tabs", "paused")}
        return JsonResponse({"parts": parts})


# ------------------------------------------------------------------ jobs


def job_context(queue: RedisJobQueue, job_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """What the job page shows of the job hash ``fields``, every part bounded.
    ``job_id`` is the ID in the URL: links are built from it, never from the
    hash's own ``id`` field (which may say anything)."""
    status = fields.get("status", "")
    # A running at-most-once job is never handed out again (requeue_now refuses it).
    cancel_asked = "cancel_requested_ms" in fields  # asked already: its worker ends it
    requeueable = status == "scheduled" or (status == "processing" and fields.get("delivery") != "at-most-once")
    times = _times(fields)
    errors, errors_left = error_log(fields.get("errors"))
    other = sorted((k, v) for k, v in fields.items() if k not in SHOWN_FIELDS and k not in times)
    return {
        "queue_name": queue.queue_name,
        "job_id": job_id,
        "job": _bound_fields(fields),
        "id_mismatch": fields.get("id", job_id) != job_id,
        "times": [(cut(k.removesuffix("_ms").replace("_", " "), NAME_LIMIT), ms) for k, ms in times.items()],
        "errors": errors,
        "errors_left": errors_left,
        "progress": progress_context(queue, fields),
        "other_fields": [(cut(k, NAME_LIMIT), cut(v, SHORT_LIMIT)) for k, v in other[:OTHER_FIELDS_SHOWN]],
        "other_fields_left": max(0, len(other) - OTHER_FIELDS_SHOWN),
        # (action, button label, destructive)
        "job_actions": [
            (a, ACTIONS[a].label + ("…" if confirm else ""), a == "delete")
            for a, ok, confirm in (
                ("retry", status in ("failed", "expired"), False),
                ("requeue", status in ("completed", "cancelled"), False),
                ("cancel", status in ("pending", "scheduled", "processing") and not cancel_asked, False),
                ("requeue_now", requeueable, status == "processing"),
                ("delete", status != "processing", True),
            )
            if ok
        ],
    }


def _cancel(request: HttpRequest, q: RedisJobQueue, ids: list[str]) -> None:
    """The cancel action: each job cancelled, or its worker asked to stop it."""
    done: dict[Cancellation, int] = {Cancellation.CANCELLED: 0, Cancellation.REQUESTED: 0}
    finished: list[str] = []
    for job_id in ids:
        try:
            done[q.cancel(job_id)] += 1
        except JobNotCancellable:
            finished.append(job_id)
        except JobNotFound:
            messages.warning(request, f"Job {job_id} no longer exists.")
    if done[Cancellation.CANCELLED]:
        messages.success(request, f"Cancelled {done[Cancellation.CANCELLED]} job(s) of {q.queue_name}: they never run.")
    if done[Cancellation.REQUESTED]:
        messages.success(
            request,
            f"Asked the workers of {done[Cancellation.REQUESTED]} running job(s) of {q.queue_name} to cancel them.",
        )
    if finished:
        messages.warning(request, f"{len(finished)} job(s) left alone: already finished ({', '.join(finished[:10])}).")


def progress_context(queue: RedisJobQueue, fields: dict[str, str]) -> dict[str, Any] | None:
    """The job's last progress report for the page: the bar's value as text
    (never localised: "0.4200"), whole percent, the message, its age in
    seconds on the Redis server's clock, and the attempt that reported it when
    that is not the latest. None when the job reported none."""
    progress = Progress.from_fields(fields)
    if progress is None:
        return None
    now_ms = queue.clock() if queue.clock is not None else browse.server_time_ms(queue.client)
    attempts = _integer(fields.get("attempts"))
    return {
        "value": f"{progress.fraction:.4f}",
        "percent": progress.percent,
        "message": cut(progress.message, SHORT_LIMIT),
        "age_s": max(0, int(now_ms - progress.updated_at_ms) // 1000),
        "earlier_attempt": progress.attempt if attempts is not None and progress.attempt != attempts else None,
    }


def _times(fields: dict[str, str]) -> dict[str, int]:
    """The timestamp fields that hold a time in ms, oldest first (at most
    TIMES_SHOWN); one that does not hold a number is shown with the other fields."""
    times = [
        (k, ms) for k, v in fields.items() if k.endswith(("_at_ms", "_until_ms")) and (ms := _integer(v)) is not None
    ]
    return dict(sorted(times, key=lambda kv: kv[1])[:TIMES_SHOWN])


def _bound_fields(fields: dict[str, str]) -> dict[str, str]:
    """The job hash with every text cut to what the page shows. The payload
    and the result are left whole: pretty_json reads them only as far as it
    shows them."""
    limits = {"payload": None, "result": None, "errors": None, "last_traceback": PRETTY_LIMIT}
    return {k: v if (limit := limits.get(k, SHORT_LIMIT)) is None else cut(v, limit) for k, v in fields.items()}


def error_log(text: str | None) -> tuple[list[dict[str, Any]], int]:
    """The job's ``errors`` field (a JSON list of {attempt, error, ts_ms},
    newest last) for the page: its newest ERROR_LOG_SHOWN entries, and how many
    older ones are not shown. What is not such a list or entry is shown as
    text, marked broken."""
    if not text:
        return [], 0
    try:
        log = json.loads(text)
    except RecursionError:
        return [_broken_entry(f"the error log is nested too deeply to read: {cut(text, SHORT_LIMIT)}")], 0
    except ValueError:
        return [_broken_entry(f"the error log is not JSON: {cut(text, SHORT_LIMIT)}")], 0
    if not isinstance(log, list):
        return [_broken_entry(f"the error log is not a list: {json_preview(log)}")], 0
    shown = log[-ERROR_LOG_SHOWN:]
    return [_error_entry(e) for e in shown], len(log) - len(shown)


def _broken_entry(error: str) -> dict[str, Any]:
    return {"attempt": "", "ts_ms": None, "error": error, "broken": True}


def _error_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return _broken_entry(f"not an entry: {json_preview(entry)}")
    attempt, error, ts_ms = entry.get("attempt", ""), entry.get("error", ""), entry.get("ts_ms")
    return {
        "attempt": _entry_text(attempt, NAME_LIMIT),
        "ts_ms": ts_ms if isinstance(ts_ms, int | str) else None,
        "error": _entry_text(error, SHORT_LIMIT),
        "broken": not isinstance(attempt, int | str) or not isinstance(error, str),
    }


def _entry_text(value: Any, limit: int) -> str:
    return cut(value, limit) if isinstance(value, str) else json_preview(value, limit)


class JobPage(AdminPage):
    def get(self, request: HttpRequest, queue: str, job_id: str) -> HttpResponse:
        q = self.queue(queue)
        fields = browse.get_job(q, job_id)
        if fields is None:
            context = self.context(request, title="No such job", queue_name=queue, job_id=job_id)
            return TemplateResponse(request, TEMPLATES + "job_missing.html", context, status=404)
        context = self.context(request, title=f"Job {job_id}", **job_context(q, job_id, fields))
        return TemplateResponse(request, TEMPLATES + "job.html", context)


class JobJSON(AdminPage):
    def get(self, request: HttpRequest, queue: str, job_id: str) -> HttpResponse:
        q = self.queue(queue)
        fields = browse.get_job(q, job_id)
        if fields is None:
            return JsonResponse({"parts": {}, "missing": True}, status=404)
        html = render_to_string(TEMPLATES + "_job_status.html", job_context(q, job_id, fields), request)
        return JsonResponse({"parts": {"status": html}})


class SearchPage(AdminPage):
    """Find a job by ID: in one queue (?queue=), or in every queue."""

    def get(self, request: HttpRequest) -> HttpResponse:
        job_id = request.GET.get("q", "").strip()
        queue_name = request.GET.get("queue", "")
        names = [queue_name] if queue_name else list(get_settings().queues)
        queues = [self.queue(n) for n in names]
        found = [(q, job_url(q, job_id)) for q in (browse.find_job(queues, job_id) if job_id else [])]
        if len(found) == 1 and found[0][1]:
            return HttpResponseRedirect(found[0][1])
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
        which = which if which in browse.LISTS else ""
        ids = [i for i in request.POST.getlist("ids") if browse.valid_job_id(i)][:MAX_IDS_PER_POST]
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
        if name == "purge" and which not in bulk.PURGEABLE:
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
        if request.POST.get("back") == "job" and len(ids) == 1 and (url := job_url(queue, ids[0])):
            return url
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
            return browse.list_length(queue, "failed")
        return browse.list_length(queue, which) if which else 0

    @staticmethod
    def _run(request: HttpRequest, q: RedisJobQueue, name: str, which: str, ids: list[str], direction: str) -> None:
        where = q.queue_name
        if name in ("retry", "requeue", "requeue_now", "delete"):
            # The engine call: retry (also "run a completed job again"), requeue_now, delete.
            op = {"retry": "retry", "requeue": "retry", "requeue_now": "requeue", "delete": "delete"}[name]
            outcomes = bulk.apply(q, op, ids)
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
        elif name == "cancel":
            _cancel(request, q, ids)
        elif name == "retry_all":
            result = bulk.retry_all_failed(q, RETRY_ALL_LIMIT)
            messages.success(request, f"Retried {result.done} failed job(s) of {where}.")
            if result.skipped:
                messages.warning(request, f"{result.skipped} job(s) could not be retried and stay on the failed list.")
            if result.left > result.skipped:
                messages.warning(request, f"{result.left} job(s) still on the failed list: run it again for more.")
        elif name == "purge":
            result = bulk.purge(q, which)
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
