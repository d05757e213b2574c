"""django-jobqueue: a fast, crash-safe background job queue for Django on plain Redis.

The public API is re-exported here; everything else is an implementation detail.

The package has three layers: ``engine/`` (the queue on Redis, free of Django),
``worker/`` (the worker runtime) and, at this level, the Django face. Every name
below is imported on first use, so that importing the engine (or ``@job`` in a
``jobs.py``) loads nothing it does not need: ``django_jobqueue.engine`` loads
without Django installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CorruptJobError",
    "EnqueueVetoed",
    "InvalidJobOptions",
    "JobCancelled",
    "JobNotCancellable",
    "JobNotFound",
    "JobQueueError",
    "PayloadError",
    "QueuePaused",
    "QueueUnavailable",
    "ReplicationError",
    "UnknownJobError",
    "UnknownQueueError",
    "__version__",
    "aenqueue",
    "aenqueue_many",
    "cancel",
    "enqueue",
    "enqueue_many",
    "get_queue",
    "job",
]

# Where each public name is defined (relative to this package); the exceptions
# are in .exceptions.
_HOME = {
    "aenqueue": ".async_api",
    "aenqueue_many": ".async_api",
    "cancel": ".cancellation",
    "enqueue": ".api",
    "enqueue_many": ".api",
    "get_queue": ".api",
    "job": ".registry",
}

if TYPE_CHECKING:
    from .api import enqueue, enqueue_many, get_queue
    from .async_api import aenqueue, aenqueue_many
    from .cancellation import cancel
    from .exceptions import (
        ConfigurationError,
        CorruptJobError,
        EnqueueVetoed,
        InvalidJobOptions,
        JobCancelled,
        JobNotCancellable,
        JobNotFound,
        JobQueueError,
        PayloadError,
        QueuePaused,
        QueueUnavailable,
        ReplicationError,
        UnknownJobError,
        UnknownQueueError,
    )
    from .registry import job


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOME.get(name, ".exceptions"), __name__), name)
    globals()[name] = value  # later reads skip this function
    return value
