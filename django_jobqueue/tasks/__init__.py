"""A backend for Django's Tasks framework on django-jobqueue (docs/tasks.md).

    TASKS = {"default": {"BACKEND": "django_jobqueue.tasks.JobQueueBackend"}}

Works with ``django.tasks`` (Django 6.0+) and with the ``django-tasks``
backport on Django 5.2 (``django_tasks``); see compat.py.
"""

from __future__ import annotations

from ..registry import TASK_NAME_PREFIX
from .backend import JobQueueBackend, JobQueueTask
from .compat import FRAMEWORK
from .execute import resolve_job_name
from .naming import job_name, load_task
from .results import TaskAbandoned

__all__ = [
    "FRAMEWORK",
    "TASK_NAME_PREFIX",
    "JobQueueBackend",
    "JobQueueTask",
    "TaskAbandoned",
    "job_name",
    "load_task",
    "resolve_job_name",
]
