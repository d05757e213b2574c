"""tests/settings.py with flow limits on two queues, for worker processes
(tests/test_flow_fleet.py): "fast" runs at most 2 jobs at once fleet-wide,
"low" hands out at most 5 jobs a second."""

from tests.settings import *  # noqa: F403
from tests.settings import JOBQUEUE

JOBQUEUE = {
    **JOBQUEUE,
    "QUEUES": {
        **JOBQUEUE["QUEUES"],
        "fast": {**JOBQUEUE["QUEUES"]["fast"], "GLOBAL_CONCURRENCY": 2},
        "low": {"RATE_LIMIT": "5/s"},
    },
}
