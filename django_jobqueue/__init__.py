"""django-jobqueue: a fast, crash-safe background job queue for Django on plain Redis.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CorruptJobError",
    "EnqueueVetoed",
    "InvalidJobOptions",
    "JobQueueError",
    "PayloadError",
    "QueuePaused",
    "QueueUnavailable",
    "ReplicationError",
    "UnknownJobError",
    "UnknownQueueError",
    "__version__",
    "enqueue",
    "enqueue_many",
    "get_queue",
    "job",
]

from .exceptions import (
    ConfigurationError,
    CorruptJobError,
    EnqueueVetoed,
    InvalidJobOptions,
    JobQueueError,
    PayloadError,
    QueuePaused,
    QueueUnavailable,
    ReplicationError,
    UnknownJobError,
    UnknownQueueError,
)
from .registry import job

if TYPE_CHECKING:
    from .api import enqueue, enqueue_many, get_queue


def __getattr__(name: str) -> Any:
    # enqueue() and friends pull in Django's db layer; import them on first use
    # so importing the package (for @job in a jobs.py) stays cheap.
    if name in ("enqueue", "enqueue_many", "get_queue"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
