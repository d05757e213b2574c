"""Settings of the demo project: a plain Django project that uses django-jobqueue."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret")
# Off unless asked for (DEMO_DEBUG=1): a debug page shows settings and local
# variables to whoever triggers it. Static files are served either way (urls.py).
DEBUG = os.environ.get("DEMO_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_jobqueue",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
WSGI_APPLICATION = "testproject.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The demo's keys are its own (`jobq-demo:jobs:pending`, ...), not the default
# `queue:*`: `make demo` may borrow a Redis that a local project already uses,
# and its worker must never claim (and dead-letter as unknown) that project's jobs.
DEMO_KEY_PREFIX = os.environ.get("DEMO_KEY_PREFIX", "jobq-demo")

JOBQUEUE = {
    "REDIS_URL": os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "KEY_PREFIX": DEMO_KEY_PREFIX,
    "QUEUES": {
        # Real @job handlers (demo/jobs.py), run by `manage.py jobq_worker`.
        "jobs": {"VISIBILITY_MS": 10_000, "CONCURRENT_JOBS": 4},
        # A limited queue (docs/flow-control.md): a card processor takes at most
        # 2 charges at once and 5 a second, whatever the number of workers and
        # runners; the demo page's "Queue 20 payments" shows the rest waiting.
        "payments": {"VISIBILITY_MS": 10_000, "CONCURRENT_JOBS": 4, "GLOBAL_CONCURRENCY": 2, "RATE_LIMIT": "5/s"},
        # The seed's demo: a mock worker pool inside the web process drives this
        # queue with the bare engine, so failures and hangs can be dialled in.
        "demo": {"VISIBILITY_MS": 5000, "MAX_ATTEMPTS": 3, "HISTORY": 50},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_jobqueue": {"handlers": ["console"], "level": "INFO"}},
}
