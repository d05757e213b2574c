"""Real jobs of the demo project, run by `manage.py jobq_worker`.

They stand in for what a project sends to the background: mail, webhooks,
thumbnails, invoices, card payments. Each takes a little time; the email one
fails now and then so retries show in the admin (one time in five;
DEMO_SMTP_FAILURE_RATE changes it, the browser test sets 0). One is an
`async def` handler (fetch_rate), run on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from datetime import UTC, datetime, timedelta

from django_jobqueue import job


@job(name="send_welcome_email", max_attempts=3, backoff_base_seconds=2)
def send_welcome_email(payload, job):
    time.sleep(0.2)
    if random.random() < float(os.environ.get("DEMO_SMTP_FAILURE_RATE", "0.2")):  # an unreliable SMTP server
        raise ConnectionError(f"smtp timeout sending to {payload['email']}")
    return {"sent_to": payload["email"], "attempt": job.attempts}


@job(name="generate_thumbnail")
def generate_thumbnail(payload, job):
    time.sleep(0.1)
    digest = hashlib.sha256(payload["image"].encode()).hexdigest()[:12]
    return {"thumbnail": f"thumbs/{digest}.png", "size": payload.get("size", 128)}


@job(name="render_invoice", max_attempts=5)
def render_invoice(payload, job):
    time.sleep(0.3)
    total = sum(line["qty"] * line["price"] for line in payload["lines"])
    return {"invoice": payload["number"], "total": round(total, 2)}


@job(name="digest", every=timedelta(seconds=10), payload={"kind": "digest"})
def digest(payload, job):
    """A periodic job (docs/schedules.md): every worker runs the schedule, each
    tick is enqueued once. Every 10 s here so the demo shows it at work."""
    return {"kind": payload["kind"], "ran_at": datetime.now(UTC).isoformat(timespec="seconds")}


@job(name="export_report", max_attempts=1)
def export_report(payload, job):
    """A long job that says how far it is and stops when it is cancelled
    (docs/cancellation.md, docs/enqueue.md "Progress"): the demo page starts
    one, shows its progress bar and has a Cancel button."""
    pages = int(payload.get("pages", 30))
    for page in range(1, pages + 1):
        job.raise_if_cancelled()  # ends the job "cancelled", not failed, and not retried
        time.sleep(0.5)  # rendering a page
        job.progress(page / pages, message=f"page {page} of {pages}")
    return {"pages": pages}


@job(name="charge_card", queue="payments", concurrency_key=lambda payload: payload["customer"], concurrency=1)
def charge_card(payload, job):
    """A call to a card processor that allows few at once: the "payments"
    queue's GLOBAL_CONCURRENCY (2) and RATE_LIMIT (5/s) hold across every
    worker (docs/flow-control.md), and the concurrency key charges one
    customer's cards one at a time. The demo page queues 20 at once."""
    time.sleep(0.8)  # the processor's answer
    return {"customer": payload["customer"], "charged": payload["amount"]}


# What the pretend rates API answers.
RATES = {"USD": 1.08, "GBP": 0.85, "JPY": 162.4, "CHF": 0.95, "SEK": 11.3}


@job(name="fetch_rate")
async def fetch_rate(payload, job):
    """An async handler (docs/async.md): the worker runs it on its event loop,
    so while it awaits the slow rates API it holds no runner thread. The demo
    page queues 20 at once; the worker's 4 runners hand them all to the loop,
    and the 20 one-second waits overlap."""
    await asyncio.sleep(1.0)  # a slow rates API: an HTTP call, awaited (httpx.AsyncClient in a project)
    return {"pair": f"EUR/{payload['currency']}", "rate": RATES.get(payload["currency"], 1.0)}
