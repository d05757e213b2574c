"""The demo's pages: the seed's live queue page, and a form whose view enqueues
a real job the way a project's own view would."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from django_jobqueue import (
    InvalidJobOptions,
    JobNotCancellable,
    JobNotFound,
    PayloadError,
    QueueUnavailable,
    aenqueue_many,
    cancel,
    enqueue,
    enqueue_many,
    get_queue,
)
from django_jobqueue.engine.schedules import ScheduleStore
from django_jobqueue.schedules import all_schedules

from .pool import KINDS, QUEUE, pool

LIST_PREVIEW = 15
# The live page and its state API are open to anyone: error texts there may
# quote other visitors' sign-up addresses ("smtp timeout sending to ..."), so
# every word with an "@" in it is hidden. Sign-up takes only addresses that are
# one such word (no spaces, quotes or controls), so none is shown in part.
EMAIL_LIKE = re.compile(r"[^\s@]*@[^\s@]*")
HIDDEN_EMAIL = "[e-mail address hidden]"


def hide_emails(text: str) -> str:
    return EMAIL_LIKE.sub(HIDDEN_EMAIL, text)


# What the live page's script looks for to show its "Redis is unavailable" banner.
REDIS_UNAVAILABLE = "redis unavailable"


def redis_unavailable(exc: Exception) -> JsonResponse:
    return JsonResponse({"error": REDIS_UNAVAILABLE, "detail": str(exc)}, status=503)


def needs_redis(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """A JSON view that reads or writes Redis answers 503 with a JSON error when
    Redis is down: the page polls these, and a server error page is not JSON."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except (RedisError, QueueUnavailable) as exc:
            return redis_unavailable(exc)

    return wrapped


def needs_redis_async(view: Callable[..., Awaitable[JsonResponse]]) -> Callable[..., Awaitable[JsonResponse]]:
    """needs_redis for an async view: the same 503 when Redis is down."""

    @wraps(view)
    async def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
        try:
            return await view(request, *args, **kwargs)
        except (RedisError, QueueUnavailable) as exc:
            return redis_unavailable(exc)

    return wrapped


def _plain_email(email: str) -> bool:
    """A valid address with nothing a word-based mask could split."""
    if len(email) > 254 or not email.isprintable() or any(c.isspace() or c == '"' for c in email):
        return False
    try:
        validate_email(email)
    except ValidationError:
        return False
    return True


def index(request: HttpRequest) -> HttpResponse:
    context = {"kinds": KINDS, "pool": pool.state(), "schedules": [], "redis_error": ""}
    try:
        context["schedules"] = _schedules()
    except (RedisError, QueueUnavailable) as exc:
        # The page still loads, with its banner up; its script takes it down once Redis answers.
        context["redis_error"] = str(exc)
    return render(request, "demo/index.html", context)


def _schedules() -> list[dict]:
    """The demo's periodic jobs: each one's calendar, next tick and latest runs."""
    rows = []
    for schedule in all_schedules():
        store = ScheduleStore(get_queue(schedule.queue))
        state = store.state(schedule.name)
        next_ms = state.get("next_ms")
        rows.append(
            {
                "name": schedule.name,
                "every_s": (schedule.every_ms or 0) / 1000,
                "next": datetime.fromtimestamp(int(next_ms) / 1000, UTC) if next_ms and next_ms != "inf" else None,
                "runs": store.recent_runs(schedule.name, 5),
            }
        )
    return rows


def signup(request: HttpRequest) -> HttpResponse:
    """What a project's view does: validate the form, answer at once, and leave
    the slow work (the welcome mail) to the queue."""
    context: dict = {}
    if request.method == "POST":
        email = request.POST.get("email", "").strip()
        if not _plain_email(email):
            context["error"] = "Enter an e-mail address."
        else:
            try:
                context["job_id"] = enqueue("send_welcome_email", {"email": email}, on_commit=True)
                context["email"] = email
            except (QueueUnavailable, PayloadError, InvalidJobOptions) as exc:
                context["error"] = f"Could not queue the welcome mail: {exc}"
    return render(request, "demo/signup.html", context)


def _preview(queue, ids: list[str]) -> list[dict]:
    pipe = queue.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(queue.keys.job(job_id), "name", "status", "attempts", "payload", "last_error")
    rows = []
    for job_id, (name, status, attempts, payload, error) in zip(ids, pipe.execute(), strict=True):
        try:
            kind = json.loads(payload).get("kind") if payload else None
        except (ValueError, AttributeError):
            kind = None
        rows.append(
            {
                "id": job_id,
                "name": kind or name or "",
                "status": status or "gone",
                "attempts": attempts or "0",
                "error": hide_emails(error or ""),
            }
        )
    return rows


def _queue_state(name: str) -> dict:
    queue = get_queue(name)
    k = queue.keys
    pipe = queue.client.pipeline(transaction=False)
    pipe.lrange(k.pending, -LIST_PREVIEW, -1)
    pipe.lrange(k.processing, 0, LIST_PREVIEW - 1)
    pipe.lrange(k.completed, 0, LIST_PREVIEW - 1)
    pipe.lrange(k.failed, 0, LIST_PREVIEW - 1)
    pipe.zrange(k.scheduled, 0, LIST_PREVIEW - 1)
    pending, processing, completed, failed, scheduled = pipe.execute()
    return {
        "stats": queue.stats(),
        "lists": {
            "scheduled": _preview(queue, scheduled),
            "pending": _preview(queue, list(reversed(pending))),
            "processing": _preview(queue, processing),
            "completed": _preview(queue, completed),
            "failed": _preview(queue, failed),
        },
    }


@require_GET
@needs_redis
def state(request: HttpRequest) -> JsonResponse:
    queues = {name: _queue_state(name) for name in (QUEUE, "jobs", PAYMENTS_QUEUE)}
    return JsonResponse({"queues": queues, "pool": pool.state()})


def _number(request: HttpRequest, key: str, default: float) -> float:
    try:
        return float(request.POST.get(key, default))
    except ValueError:
        return default


@require_POST
@needs_redis
def enqueue_batch(request: HttpRequest) -> JsonResponse:
    kind = request.POST.get("kind", "email")
    if kind not in KINDS:
        return JsonResponse({"error": f"unknown kind {kind!r}"}, status=400)
    count = int(max(1, min(1000, _number(request, "count", 10))))
    payloads = [{"kind": kind, "n": n, "ref": random.randrange(10**6)} for n in range(count)]
    ids = get_queue(QUEUE).enqueue_many(payloads, name=kind)
    return JsonResponse({"enqueued": len(ids)})


@require_POST
def configure_pool(request: HttpRequest) -> JsonResponse:
    config = pool.configure(
        size=int(_number(request, "size", 0)),
        latency_ms=int(_number(request, "latency_ms", 300)),
        fail_rate=_number(request, "fail_rate", 0.1),
        hang_rate=_number(request, "hang_rate", 0.05),
    )
    return JsonResponse({"pool": vars(config)})


@require_POST
@needs_redis
def reclaim(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"reclaimed": get_queue(QUEUE).reclaim_stuck()})


REPORT_QUEUE = "jobs"  # run by the demo's real worker (manage.py jobq_worker)


@require_POST
@needs_redis
def start_report(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"job_id": enqueue("export_report", {"pages": 30}, queue=REPORT_QUEUE)})


@require_GET
@needs_redis
def report_state(request: HttpRequest, job_id: str) -> JsonResponse:
    queue = get_queue(REPORT_QUEUE)
    fields = queue.get_fields(job_id)
    if not fields:
        return JsonResponse({"error": "no such report"}, status=404)
    progress = queue.progress(job_id)
    return JsonResponse(
        {
            "status": fields.get("status", ""),
            "percent": progress.percent if progress else 0,
            "message": progress.message if progress else "",
            "cancel_requested": "cancel_requested_ms" in fields,
        }
    )


@require_POST
@needs_redis
def cancel_report(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        outcome = cancel(job_id, queue=REPORT_QUEUE)
    except (JobNotCancellable, JobNotFound) as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"cancel": outcome.value})


PAYMENTS_QUEUE = "payments"  # limited in the settings: 2 at once, 5 a second
PAYMENTS_BURST = 20
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli")


@require_POST
@needs_redis
def queue_payments(request: HttpRequest) -> JsonResponse:
    """A burst of card charges: the worker has runners to spare, but the
    queue's limits let 2 run at once; the rest wait in pending."""
    payloads = [{"customer": CUSTOMERS[n % len(CUSTOMERS)], "amount": 10 + n, "n": n} for n in range(PAYMENTS_BURST)]
    return JsonResponse({"enqueued": len(enqueue_many("charge_card", payloads))})


RATES_BURST = 20
CURRENCIES = ("USD", "GBP", "JPY", "CHF", "SEK")


@require_POST
@needs_redis_async
async def fetch_rates(request: HttpRequest) -> JsonResponse:
    """An async view (runserver runs it through async_to_sync; an ASGI server on
    its loop) queueing a burst of async jobs with one awaited aenqueue_many():
    the worker's event loop runs all 20 at once, its 4 runner threads only claim."""
    payloads = [{"currency": CURRENCIES[n % len(CURRENCIES)], "n": n} for n in range(RATES_BURST)]
    return JsonResponse({"enqueued": len(await aenqueue_many("fetch_rate", payloads))})
