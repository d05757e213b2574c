"""Job names of django.tasks tasks, and the guarded way back from a name to its Task.

A task enqueued through JobQueueBackend is stored as a job named
``django.tasks:<module path>`` (``django.tasks:myapp.tasks.send_email``). The
worker turns such a name back into the Task object, but a name read from Redis
is data anyone with write access could have put there, so:

* the module is imported only if it is already imported, or belongs to an
  installed app (or to the project package holding the settings module):
  ``django.tasks:antigravity.fly`` imports nothing;
* the attribute is read from the module's namespace (no ``__getattr__`` hooks);
* it must be a Task whose own module path is the name: ``django.tasks:os.system``
  finds a function, not a Task, and is refused.

Every refusal is an UnknownJobError, which the worker dead-letters.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from django.apps import apps
from django.conf import settings

from ..exceptions import UnknownJobError
from ..registry import TASK_NAME_PREFIX
from .compat import Task


def job_name(task: Task[..., Any]) -> str:
    """The job name a task is stored under."""
    return f"{TASK_NAME_PREFIX}{task.module_path}"


def _importable(module_name: str) -> bool:
    packages = [config.name for config in apps.get_app_configs()]
    settings_module = getattr(settings, "SETTINGS_MODULE", None) or ""
    if "." in settings_module:
        packages.append(settings_module.rpartition(".")[0])
    return any(module_name == p or module_name.startswith(f"{p}.") for p in packages)


def load_task(name: object) -> Task[..., Any]:
    """The Task stored under job name ``name`` (a value read from Redis), or
    UnknownJobError saying why not."""
    if not isinstance(name, str) or not name.startswith(TASK_NAME_PREFIX):
        raise UnknownJobError(f"job name {name!r} does not name a django.tasks task")
    path = name[len(TASK_NAME_PREFIX) :]
    module_name, _, attr = path.rpartition(".")
    if not module_name or not all(part.isidentifier() for part in path.split(".")):
        raise UnknownJobError(f"job name {name!r} is not a task's module path")
    if module_name not in sys.modules and not _importable(module_name):
        raise UnknownJobError(
            f"job name {name!r}: module {module_name!r} is not part of an installed app, so it is not imported"
        )
    try:
        # import_module() even when the module is in sys.modules: it waits for
        # another runner thread that is still importing it, where sys.modules
        # would hand over a half-initialised module without the task yet.
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot run this"
        raise UnknownJobError(f"job name {name!r}: importing {module_name!r} failed: {exc!r}") from exc
    found = vars(module).get(attr)
    if not isinstance(found, Task) or found.module_path != path:
        raise UnknownJobError(f"job name {name!r} does not name a django.tasks Task: refusing to run it")
    return found
