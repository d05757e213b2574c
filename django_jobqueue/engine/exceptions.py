"""The exceptions the engine raises.

Users catch them from ``django_jobqueue`` or ``django_jobqueue.exceptions``, which
add the ones of the Django face (settings, job names, queue names, vetoed enqueues).
"""

from __future__ import annotations


class JobQueueError(Exception):
    """Base class of every error raised by django-jobqueue."""


class PayloadError(JobQueueError, ValueError):
    """A payload or result cannot be stored: not JSON-encodable, or too large."""


class InvalidJobOptions(JobQueueError, ValueError):
    """An option given to enqueue() or @job is not valid."""


class QueueUnavailable(JobQueueError, ConnectionError):
    """Redis could not be reached (or answered an error) in time; nothing is known to be written."""


class QueuePaused(JobQueueError):
    """The queue is paused for enqueueing; nothing was written."""


class ReplicationError(JobQueueError):
    """The job is written on the primary, but fewer replicas than asked
    acknowledged it in time: it is not yet safe from a primary failure."""

    def __init__(self, message: str, job_ids: list[str], acknowledged: int, wanted: int) -> None:
        super().__init__(message)
        self.job_ids = job_ids
        self.acknowledged = acknowledged
        self.wanted = wanted


class CorruptJobError(JobQueueError, ValueError):
    """Data found in Redis is not what django-jobqueue wrote (bad JSON, missing fields)."""


class JobNotFound(JobQueueError, LookupError):
    """No job has this id (in the queue, or in any configured queue): it never
    existed, or it was deleted, or its hash was cleaned up."""


class JobNotCancellable(JobQueueError):
    """cancel() of a job that has finished (completed, failed, lost, expired,
    or cancelled already): nothing was changed. ``status`` is the job's."""

    def __init__(self, message: str, job_id: str, status: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


class JobCancelled(JobQueueError):
    """Raised by ``job.raise_if_cancelled()`` in a handler whose job was
    cancelled. Let it propagate: the worker ends the job ``cancelled`` (not
    failed, never retried). Caught by an ``except Exception`` in the handler,
    it stops nothing."""
