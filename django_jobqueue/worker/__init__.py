"""The worker runtime: threads that claim, run and finish jobs, renew their
leases and keep the queues swept (``manage.py jobq_worker``).

It drives the engine, and reads the settings, the job registry and the shared
client of the Django face. ``Worker`` is imported on first use, so that a web
process importing a module of this package (``worker.job`` for a type hint,
the django.tasks backend) does not load the whole runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Worker"]

if TYPE_CHECKING:
    from .worker import Worker


def __getattr__(name: str) -> Any:
    if name != "Worker":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .worker import Worker

    return Worker
