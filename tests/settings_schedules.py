"""tests/settings.py with a queue of periodic jobs: a one-second schedule of
``add`` on the "ticks" queue (tests/test_schedules.py runs workers on it)."""

from tests.settings import *  # noqa: F403
from tests.settings import JOBQUEUE

JOBQUEUE = {
    **JOBQUEUE,
    "QUEUES": {**JOBQUEUE["QUEUES"], "ticks": {}},
    "SCHEDULES": {
        "every-second": {"job": "add", "every": 1, "queue": "ticks", "payload": {"a": 1, "b": 2}, "overlap": "allow"}
    },
}
