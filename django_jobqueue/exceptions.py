"""The exceptions users of django-jobqueue may catch."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class JobQueueError(Exception):
    """Base class of every error raised by django-jobqueue."""


class ConfigurationError(JobQueueError, ImproperlyConfigured):
    """The JOBQUEUE setting is wrong; the message names the key."""


class PayloadError(JobQueueError, ValueError):
    """A payload or result cannot be stored: not JSON-encodable, or too large."""


class InvalidJobOptions(JobQueueError, ValueError):
    """An option given to enqueue() or @job is not valid."""


class UnknownJobError(JobQueueError, LookupError):
    """No job definition has this name (in this process)."""


class UnknownQueueError(JobQueueError, LookupError):
    """The queue is not in JOBQUEUE["QUEUES"]."""


class EnqueueVetoed(JobQueueError):
    """The job's ``preflight.on_before_add`` said no; nothing was written."""


class QueueUnavailable(JobQueueError, ConnectionError):
    """Redis could not be reached (or answered an error) in time; nothing is known to be written."""


class CorruptJobError(JobQueueError, ValueError):
    """Data found in Redis is not what django-jobqueue wrote (bad JSON, missing fields)."""
