"""tests/settings.py with every worker also running an events listener
(tests/test_worker_connections.py counts that thread's connections too)."""

from tests.settings import *  # noqa: F403
from tests.settings import JOBQUEUE

JOBQUEUE = {**JOBQUEUE, "WORKER_EVENTS_LISTENER": True}
