"""The one place that knows where Django's Tasks framework lives.

Django 6.0+ ships it as ``django.tasks``. On Django 5.2 the ``django-tasks``
backport provides the same API as ``django_tasks``; release 0.12 is the first
with Django 6.0's names (``TaskResultStatus.SUCCESSFUL``, ``InvalidTask``'s
message texts, ``@task(**kwargs)``), so it is the oldest we accept. Everything
else in this package imports from here, so the rest of the code is the same
on both lines.
"""

from __future__ import annotations

import inspect
from importlib.util import find_spec
from typing import TYPE_CHECKING

# Type checkers read Django 6's module (django-stubs types it): the API both lines share.
if TYPE_CHECKING or find_spec("django.tasks") is not None:
    from django.tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import DEFAULT_TASK_PRIORITY, TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK = "django.tasks"
else:  # Django < 6.0: the backport, if installed.
    try:
        from django_tasks import (
            DEFAULT_TASK_BACKEND_ALIAS,
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task,
            task_backends,
        )
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import (
            DEFAULT_TASK_PRIORITY,
            TASK_MAX_PRIORITY,
            TASK_MIN_PRIORITY,
            Task,
            TaskError,
        )
        from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import (
            TaskResultDoesNotExist,
            TaskResultMismatch,
        )
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    except ImportError as exc:
        raise ImportError(
            "django_jobqueue.tasks needs Django's Tasks framework: Django 6.0 or later, or on Django 5.2 "
            "the backport: pip install 'django-tasks>=0.12'"
        ) from exc
    FRAMEWORK = "django_tasks"

if not hasattr(TaskResultStatus, "SUCCESSFUL"):  # django-tasks < 0.12 said SUCCEEDED
    raise ImportError("django_jobqueue.tasks needs django-tasks 0.12 or later (Django 6.0's names)")

# Django 6.1 and django-tasks 0.11+ pass unknown @task(...) keywords on to the
# backend's task_class; Django 6.0 refuses them. Our options then come from
# .using(...) or the backend's OPTIONS instead (docs/tasks.md).
TASK_DECORATOR_TAKES_OPTIONS = any(
    p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(task).parameters.values()
)

__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_PRIORITY",
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK",
    "TASK_DECORATOR_TAKES_OPTIONS",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
