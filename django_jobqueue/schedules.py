"""Periodic jobs as users define them: on ``@job`` (``cron=``, ``every=``, ...)
and in ``JOBQUEUE["SCHEDULES"]``; built into the engine's Schedules
(engine/schedules.py), which the workers' schedulers run.

A schedule on ``@job`` is named after its job; one in settings by its key.
Everything is checked when the schedules are built (the system checks build
them): a bad cron expression, an unknown time zone or job name, an interval
under a second is an error naming the schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from . import django_json
from .conf import Settings, get_settings
from .engine.exceptions import PayloadError
from .engine.schedules import Schedule, ScheduleError
from .exceptions import ConfigurationError, UnknownJobError, UnknownQueueError
from .options import seconds_to_ms
from .registry import TASK_NAME_PREFIX, JobDefinition, all_definitions, get_definition

# Options a schedule takes, on @job and in settings ("job" and "queue" in settings only).
SCHEDULE_OPTIONS = frozenset(
    {"cron", "every", "timezone", "payload", "overlap", "catch_up", "jitter", "start", "end", "paused"}
)
SETTINGS_ONLY = frozenset({"job", "queue", "task", "args", "kwargs"})


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """What can be checked of @job's schedule options before the settings are
    read (its queue is checked when the schedules are built); ScheduleError."""
    build(name, name, options, queue="-")


def build(name: str, job: str, options: Mapping[str, Any], *, queue: str, max_attempts: int = 3) -> Schedule:
    """The engine's Schedule for these options; ScheduleError naming the schedule if they are wrong."""
    where = f"schedule {name!r}"
    unknown = sorted(set(options) - SCHEDULE_OPTIONS - SETTINGS_ONLY)
    if unknown:
        raise ScheduleError(f"{where}: unknown option(s): {', '.join(unknown)}")
    every = options.get("every")
    if isinstance(every, timedelta):
        every = every.total_seconds()
    try:
        payload_json = django_json.dumps(options.get("payload"), what=f"{where}: payload")
        every_ms = None if every is None else seconds_to_ms(f"{where}: every", every)
        jitter_ms = seconds_to_ms(f"{where}: jitter", options.get("jitter", 0))
    except (PayloadError, ValueError) as exc:
        raise ScheduleError(str(exc)) from None
    paused = options.get("paused", False)
    if not isinstance(paused, bool):
        raise ScheduleError(f"{where}: paused must be True or False")
    cron = options.get("cron")
    if cron is not None and not isinstance(cron, str):
        raise ScheduleError(f"{where}: cron must be a string such as '0 7 * * mon-fri'")
    timezone = options.get("timezone") or _default_timezone()
    if not isinstance(timezone, str):
        raise ScheduleError(f"{where}: timezone must be a name such as 'Europe/Paris'")
    return Schedule(
        name=name,
        job=job,
        queue=queue,
        payload_json=payload_json,
        cron=cron,
        every_ms=every_ms,
        timezone=timezone,
        overlap=options.get("overlap", "skip"),
        catch_up=options.get("catch_up", "skip"),
        jitter_ms=jitter_ms,
        start_ms=_instant_ms(where, "start", options.get("start")),
        end_ms=_instant_ms(where, "end", options.get("end")),
        paused=paused,
        max_attempts=max_attempts,
    )


def all_schedules(settings: Settings | None = None) -> list[Schedule]:
    """Every schedule defined (on @job and in settings); ConfigurationError on the first wrong one."""
    settings = settings or get_settings()
    found: dict[str, Schedule] = {}
    definitions = all_definitions()
    given: list[tuple[str, JobDefinition | None, Mapping[str, Any]]] = [
        (d.name, d, d.schedule) for d in definitions.values() if d.schedule is not None
    ]
    for name, entry in settings.schedules.items():
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"JOBQUEUE['SCHEDULES'][{name!r}] must be a dict, got {type(entry).__name__}")
        given.append((name, None, entry))
    for name, definition, options in given:
        where = f"schedule {name!r}"
        if name in found:
            raise ConfigurationError(f"{where} is defined twice (on @job and in JOBQUEUE['SCHEDULES'])")
        try:
            if definition is None:
                options = _task_options(where, options)
                job = options.get("job")
                if not isinstance(job, str):
                    raise ScheduleError(f"{where}: 'job' must name a registered job (or 'task' a django.tasks task)")
                definition = get_definition(job)
            if definition.defaults.get("concurrency_key") is not None:
                # The runs a schedule adds carry no key: they would pass the limit unseen.
                raise ScheduleError(
                    f"{where}: job {definition.name!r} has a concurrency_key, which a schedule's runs do not carry; "
                    "overlap= decides whether runs may overlap"
                )
            queue = settings.queue(options.get("queue") or definition.queue).name
            max_attempts = definition.max_attempts or settings.queue(queue).max_attempts
            found[name] = build(name, definition.name, options, queue=queue, max_attempts=max_attempts)
        except (ScheduleError, UnknownJobError, UnknownQueueError) as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            raise ConfigurationError(message) from None
    return list(found.values())


def _task_options(where: str, options: Mapping[str, Any]) -> Mapping[str, Any]:
    """A schedule of a django.tasks task ("task": its dotted path, with "args"
    and "kwargs"): the same as one of the job the task is stored as, whose
    payload is {"args": [...], "kwargs": {...}}."""
    if "task" not in options:
        if "args" in options or "kwargs" in options:
            raise ScheduleError(f"{where}: args and kwargs go with 'task' (use 'payload' for a job)")
        return options
    if "job" in options or "payload" in options:
        raise ScheduleError(f"{where}: give 'task' with args and kwargs, or 'job' with a payload, not both")
    task, args, kwargs = options["task"], options.get("args", []), options.get("kwargs", {})
    if not isinstance(task, str) or not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ScheduleError(f"{where}: 'task' is a dotted path, 'args' a list, 'kwargs' a dict")
    rest = {k: v for k, v in options.items() if k not in ("task", "args", "kwargs")}
    return {**rest, "job": TASK_NAME_PREFIX + task, "payload": {"args": list(args), "kwargs": dict(kwargs)}}


def by_queue(schedules: list[Schedule]) -> dict[str, list[Schedule]]:
    out: dict[str, list[Schedule]] = {}
    for s in schedules:
        out.setdefault(s.queue, []).append(s)
    return out


def _default_timezone() -> str:
    from django.conf import settings

    return str(getattr(settings, "TIME_ZONE", None) or "UTC")


def _instant_ms(where: str, label: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ScheduleError(f"{where}: {label} must be an aware datetime")
    return int(value.timestamp() * 1000)
