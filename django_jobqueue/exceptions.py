"""The exceptions users of django-jobqueue may catch.

The engine's own (``engine/exceptions.py``) and those of the Django face,
which know of settings, job names and queue names.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

# The engine's, re-exported (the "as" form marks them so).
from .engine.exceptions import CorruptJobError as CorruptJobError
from .engine.exceptions import InvalidJobOptions as InvalidJobOptions
from .engine.exceptions import JobCancelled as JobCancelled
from .engine.exceptions import JobNotCancellable as JobNotCancellable
from .engine.exceptions import JobNotFound as JobNotFound
from .engine.exceptions import JobQueueError as JobQueueError
from .engine.exceptions import PayloadError as PayloadError
from .engine.exceptions import QueuePaused as QueuePaused
from .engine.exceptions import QueueUnavailable as QueueUnavailable
from .engine.exceptions import ReplicationError as ReplicationError


class ConfigurationError(JobQueueError, ImproperlyConfigured):
    """The JOBQUEUE setting is wrong; the message names the key."""


class UnknownJobError(JobQueueError, LookupError):
    """No job definition has this name (in this process)."""


class UnknownQueueError(JobQueueError, LookupError):
    """The queue is not in JOBQUEUE["QUEUES"]."""


class EnqueueVetoed(JobQueueError):
    """The job's ``preflight.on_before_add`` said no; nothing was written."""
