"""Settings for the test suite. conftest.py points JOBQUEUE at a private redis-server."""

import os

SECRET_KEY = "tests-only-not-secret"  # noqa: S105
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_jobqueue",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# conftest.py points REDIS_URL at the private server before any test runs, and
# passes it to worker subprocesses in JOBQUEUE_TEST_REDIS_URL.
JOBQUEUE = {
    "REDIS_URL": os.environ.get("JOBQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:1/0"),
    # Short timings so crash recovery happens within a test's patience.
    "HEARTBEAT_SECONDS": 0.2,
    "WORKER_TIMEOUT_SECONDS": 1.5,
    "SWEEP_INTERVAL_SECONDS": 0.2,
    "QUEUES": {
        "jobs": {"VISIBILITY_MS": 5000, "CONCURRENT_JOBS": 2},
        "high": {},
        "low": {},
        "fast": {"VISIBILITY_MS": 1200, "BACKOFF_BASE_SECONDS": 0},
    },
}
# django.tasks (Django 6+, or the django-tasks backport) on our queue: tests/test_tasks.py.
TASKS = {"default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend", "QUEUES": []}}
