"""Django settings of the chaos run: the runner and every worker process use these.

The runner passes the Redis URLs in the environment. Timings are short so that
recovery from a SIGKILLed worker or a restarted Redis takes seconds, not minutes;
attempts are unlimited in practice for ordinary jobs, so one is never dead-lettered
by bad luck (the jobs of the mix that must end after few attempts say so themselves:
chaos/jobs.py, chaos/run.py).
"""

import os

SECRET_KEY = "chaos-only-not-secret"  # noqa: S105
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_jobqueue", "chaos"]
DATABASES: dict = {}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

JOBQUEUE = {
    "REDIS_URL": os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:1/0"),
    "DEFAULT_QUEUE": "chaos",
    "CONNECT_TIMEOUT": 1.0,
    "SOCKET_TIMEOUT": 5.0,
    "HEARTBEAT_SECONDS": 0.5,
    "WORKER_TIMEOUT_SECONDS": 3.0,
    "SWEEP_INTERVAL_SECONDS": 0.5,
    "SHUTDOWN_GRACE_SECONDS": 5.0,
    "QUEUES": {
        "chaos": {
            "VISIBILITY_MS": 3000,
            "CONCURRENT_JOBS": 4,
            "MAX_ATTEMPTS": 1000,
            # Keep every hash: the run checks each job at the end, and a finished job
            # leaving a count-bounded history takes its hash with it. The bounds are
            # far above any run's count (the failed list's default bound, 10 000, too).
            "HISTORY": 10_000_000,
            "CLEANUP": {"COMPLETED_AFTER_SECONDS": None, "FAILED_AFTER_SECONDS": None, "EXPIRED_AFTER_SECONDS": None},
            "BACKOFF_BASE_SECONDS": 0,
        }
    },
}
