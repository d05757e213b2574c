"""Settings for worker processes of the cluster and sentinel tests: tests.settings,
pointed by environment variables at a Redis Cluster or a Sentinel group.

JOBQUEUE_TEST_REDIS_URL   any node of the cluster (with JOBQUEUE_TEST_CLUSTER=1)
JOBQUEUE_TEST_CLUSTER     "1": CLUSTER = True
JOBQUEUE_TEST_SENTINELS   "127.0.0.1:26379,127.0.0.1:26380,...": SENTINELS (service "mymaster");
                          the primary's password may come in JOBQUEUE_TEST_REDIS_URL
JOBQUEUE_TEST_SENTINEL_PASSWORD  the sentinels' own password (SENTINEL_OPTIONS)
JOBQUEUE_TEST_QUEUES      "q0,q1,q2": the queues (lease JOBQUEUE_TEST_VISIBILITY_MS, default 2000)
JOBQUEUE_TEST_LEDGER_URL  the single redis-server where tests.clusterapp records every run
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, JOBQUEUE

INSTALLED_APPS = [*INSTALLED_APPS, "tests.clusterapp"]

_visibility = int(os.environ.get("JOBQUEUE_TEST_VISIBILITY_MS", "2000"))
_queues = [q for q in os.environ.get("JOBQUEUE_TEST_QUEUES", "jobs").split(",") if q]
JOBQUEUE = {
    **JOBQUEUE,
    "CLUSTER": os.environ.get("JOBQUEUE_TEST_CLUSTER") == "1",
    "DEFAULT_QUEUE": _queues[0],
    # The failover tests tell an explained duplicate from an unexplained one by
    # whether the job first ran before the new primary was announced. With the
    # default prefetch that holds too: a prefetched job that waited through the
    # failure renews its lease before it starts, and is dropped if the new
    # primary never saw its claim (fetcher.py).
    "QUEUES": {q: {"VISIBILITY_MS": _visibility, "CONCURRENT_JOBS": 4, "BACKOFF_BASE_SECONDS": 0} for q in _queues},
}
if os.environ.get("JOBQUEUE_TEST_SENTINELS"):
    JOBQUEUE["SENTINELS"] = [
        (host, int(port)) for host, port in (s.rsplit(":", 1) for s in os.environ["JOBQUEUE_TEST_SENTINELS"].split(","))
    ]
    JOBQUEUE["SENTINEL_SERVICE"] = "mymaster"
    if os.environ.get("JOBQUEUE_TEST_SENTINEL_PASSWORD"):
        JOBQUEUE["SENTINEL_OPTIONS"] = {"password": os.environ["JOBQUEUE_TEST_SENTINEL_PASSWORD"]}
