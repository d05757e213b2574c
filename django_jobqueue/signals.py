"""The Django signals fired from the Redis events channels.

They fire in a process that runs the events listener (``manage.py jobq_events``,
or the thread a worker starts with WORKER_EVENTS_LISTENER), for jobs changed by
any process. Sender: the queue name. Keyword arguments, for every signal:

    job_id, queue, name, status, attempts   from the event message
    event                                   the decoded message (a dict)
    result                                  completed events that carry one
    error                                   retrying and failed events

See docs/signals.md for the table of events and an example receiver.
"""

from __future__ import annotations

from django.dispatch import Signal

job_enqueued = Signal()
job_started = Signal()
job_completed = Signal()
job_retrying = Signal()
job_failed = Signal()
job_reclaimed = Signal()
job_requeued = Signal()
job_deleted = Signal()
job_expired = Signal()
# cancel() (docs/cancellation.md): the job ended cancelled. Keyword argument
# ran: False when it never ran, True when its handler ran (it stopped on the
# request, or finished anyway: then result is the one it returned).
job_cancelled = Signal()
# Periodic jobs (docs/schedules.md): a schedule enqueued a run (job_id is the
# run's), or passed a tick over (reason: "missed", "paused" or "overlap";
# job_id is empty). Keyword arguments schedule and reason, besides the others.
schedule_fired = Signal()
schedule_skipped = Signal()
# Every event, the ones above and the others (promoted, ...), after the specific signal.
job_event = Signal()

# Event name (the message's "event") -> the specific signal it fires.
# deferred (okay_to_run said "not yet"), released (a worker shutting down gave
# the job back) and nacked (job.nack()) all put a job back to wait, so they
# fire job_requeued; event["event"] tells them apart. "lost" (an at-most-once
# job whose worker vanished, dead-lettered rather than run twice) fires
# job_failed. "promoted" (a scheduled job became due) fires only job_event:
# the job was announced when it was enqueued. "cancel_requested" (cancel() of a
# claimed job: its worker is told) fires only job_event; job_cancelled follows
# when the job ends.
EVENT_SIGNALS: dict[str, Signal] = {
    "enqueued": job_enqueued,
    "started": job_started,
    "completed": job_completed,
    "retrying": job_retrying,
    "failed": job_failed,
    "lost": job_failed,
    "reclaimed": job_reclaimed,
    "requeued": job_requeued,
    "deferred": job_requeued,
    "released": job_requeued,
    "nacked": job_requeued,
    "deleted": job_deleted,
    "expired": job_expired,
    "cancelled": job_cancelled,
    "schedule_fired": schedule_fired,
    "schedule_skipped": schedule_skipped,
}
