"""Django settings for our worker and enqueuer in the benchmark.

A small but real project: the bench app's jobs.py defines the job, the
worker is ``python -m django jobq_worker``. The harness passes the private
Redis server's URL in BENCH_REDIS_URL.
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
JOBQUEUE = {
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"),
    "QUEUES": {
        # Every default except the runner threads (the `--concurrency` of the
        # worker command overrides this anyway).
        "jobs": {"CONCURRENT_JOBS": 8},
    },
}
