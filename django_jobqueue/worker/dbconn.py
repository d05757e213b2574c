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

# Idents of threads that have opened a connection. An ident reused by a later
# thread costs that thread only a needless close_old_connections().
_opened_in: set[int] = set()


def _opened(sender: object, **kwargs: object) -> None:
    _opened_in.add(threading.get_ident())


connection_created.connect(_opened, dispatch_uid="django_jobqueue.worker.dbconn")


def close_stale_connections() -> None:
    """close_old_connections(), if this thread has ever opened a connection."""
    if threading.get_ident() in _opened_in:
        close_old_connections()
