"""tests/settings.py with a queue of periodic jobs on the "ticks" queue
(tests/test_schedules.py runs workers on it): ``add`` every second, and
``sleepy`` every second for 2.5 s a run, whose runs must never overlap."""

from tests.settings import *  # noqa: F403
from tests.settings import JOBQUEUE

JOBQUEUE = {
    **JOBQUEUE,
    "QUEUES": {**JOBQUEUE["QUEUES"], "ticks": {}},
    "SCHEDULES": {
        "every-second": {"job": "add", "every": 1, "queue": "ticks", "payload": {"a": 1, "b": 2}, "overlap": "allow"},
        "longer-than-its-period": {"job": "sleepy", "every": 1, "queue": "ticks", "payload": {"seconds": 2.5}},
    },
}
