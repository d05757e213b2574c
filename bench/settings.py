"""Django settings for our worker and enqueuer in the benchmark.

A small but real project: the bench app's jobs.py defines the job, the
worker is ``python -m django jobq_worker``. The harness passes the private
Redis server's URL in BENCH_REDIS_URL, and for its limited drain a fleet-wide
limit in BENCH_GLOBAL_CONCURRENCY.
"""

import os

SECRET_KEY = "bench-only-not-secret"  # noqa: S105
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_jobqueue",
    "bench.benchapp",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The limited drain's GLOBAL_CONCURRENCY (0 or unset: the queue has no limit).
_GLOBAL_CONCURRENCY = int(os.environ.get("BENCH_GLOBAL_CONCURRENCY") or 0)
JOBQUEUE = {
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"),
    "QUEUES": {
        # Every default except the runner threads (the `--concurrency` of the
        # worker command overrides this anyway).
        "jobs": {"CONCURRENT_JOBS": 8, **({"GLOBAL_CONCURRENCY": _GLOBAL_CONCURRENCY} if _GLOBAL_CONCURRENCY else {})},
    },
}
