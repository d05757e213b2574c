from __future__ import annotations

from django.apps import AppConfig


class JobQueueConfig(AppConfig):
    name = "django_jobqueue"
    verbose_name = "Job queue"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Never touches Redis: Django imports apps in every process (migrate,
        # shell, tests) and those must not need a running server.
        from . import checks  # noqa: F401 - registers the system checks
        from .registry import autodiscover

        autodiscover()
