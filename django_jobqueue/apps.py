from __future__ import annotations

from django.apps import AppConfig


class JobQueueConfig(AppConfig):
    name = "django_jobqueue"
    verbose_name = "Job queue"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Never touches Redis: Django imports apps in every process (migrate,
        # shell, tests) and those must not need a running server.
        from django.core.signals import request_started

        from . import checks  # noqa: F401 - registers the system checks
        from .autostart import on_request_started
        from .registry import autodiscover

        autodiscover()
        request_started.connect(on_request_started, dispatch_uid="django_jobqueue.autostart")
