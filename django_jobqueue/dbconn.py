"""Closing stale database connections around jobs, at no cost to jobs that use none.

Django's ``close_old_connections()`` (what a request does at its start and end)
walks every configured database through thread-local lookups: per job it costs
more than a short job itself. Database connections are per thread, and a thread
that never opened one has none to close, so we call it only in threads where
Django's ``connection_created`` signal has fired.
"""

from __future__ import annotations

import threading

from django.db import close_old_connections
from django.db.backends.signals import connection_created

_local = threading.local()


def _opened(sender: object, **kwargs: object) -> None:
    _local.opened = True


connection_created.connect(_opened, dispatch_uid="django_jobqueue.dbconn")


def close_stale_connections() -> None:
    """close_old_connections(), if this thread has ever opened a connection."""
    if getattr(_local, "opened", False):
        close_old_connections()
