"""``cancel(job_id)``: the Django face of cancel.lua (docs/cancellation.md)."""

from __future__ import annotations

from .api import get_queue
from .conf import get_settings
from .engine.browse import find_job
from .engine.exceptions import InvalidJobOptions, JobNotFound
from .engine.queue_ops import Cancellation


def cancel(job_id: str, queue: str | None = None) -> Cancellation:
    """Cancel a job. A job that waits (pending, delayed, waiting out a retry)
    ends ``cancelled`` at once and never runs: Cancellation.CANCELLED. A job a
    worker holds is asked to stop (``job.cancelled``; it ends ``cancelled``
    when its worker ends it): Cancellation.REQUESTED, also when asked before.

    ``queue``: the job's queue; None looks the id up in every configured queue
    (one round trip). Raises JobNotFound (no such job), JobNotCancellable (it
    has finished: ``.status`` says how), UnknownQueueError (``queue`` is not
    configured), InvalidJobOptions (the id is in several queues: name one).
    """
    if queue is not None:
        return get_queue(queue).cancel(job_id)
    names = find_job([get_queue(name) for name in get_settings().queues], job_id)
    if not names:
        raise JobNotFound(f"no job {job_id!r} in any configured queue")
    if len(names) > 1:
        raise InvalidJobOptions(f"job {job_id!r} is in queues {', '.join(names)}: pass queue= to cancel one")
    return get_queue(names[0]).cancel(job_id)
