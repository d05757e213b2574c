"""Job definitions: the @job decorator and the name -> definition registry.

Definitions live in ``jobs.py`` modules of installed apps, imported by
``AppConfig.ready()``. A worker only ever runs functions registered here: a job
name found in Redis is looked up, never imported, so a name such as
``os.system`` written by hand cannot run anything.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .exceptions import InvalidJobOptions, UnknownJobError
from .options import ENQUEUE_OPTIONS, seconds_to_ms, validate

F = TypeVar("F", bound=Callable[..., Any])

MAX_JOB_NAME_LENGTH = 200
PREFLIGHT_KEYS = frozenset({"on_before_add", "okay_to_run", "requeue_delay_in_seconds"})


@dataclass(frozen=True)
class Preflight:
    """Joystick's preflight checks."""

    # (job_to_add: dict, queue_name: str) -> bool; False vetoes the enqueue.
    on_before_add: Callable[..., bool] | None = None
    # (payload, job) -> bool; False puts the job back for later without using an attempt.
    okay_to_run: Callable[..., bool] | None = None
    requeue_delay_in_seconds: float = 60.0


@dataclass(frozen=True)
class JobDefinition:
    name: str
    func: Callable[..., Any]
    queue: str | None = None
    max_attempts: int | None = None
    requeue_on_failure: bool = False
    requeue_delay_seconds: float = 10.0
    on_max_attempts_exhausted: Callable[..., Any] | None = None
    preflight: Preflight = field(default_factory=Preflight)
    # Retry backoff: base and cap in seconds (None: the queue's settings).
    backoff_base_seconds: float | None = None
    backoff_max_seconds: float | None = None
    # Default enqueue options (ttl, keep_result, ...), already validated.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # A schedule's options given on @job (cron or every, ...): schedules.py builds it.
    schedule: Mapping[str, Any] | None = None
    # An ``async def`` handler: the worker runs it on its event loop (worker/async_jobs.py).
    is_async: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))

    def enqueue(self, payload: Any = None, **options: Any) -> str:
        from .api import enqueue

        return enqueue(self.name, payload, **options)

    def enqueue_many(self, payloads: Any, **options: Any) -> list[str]:
        from .api import enqueue_many

        return enqueue_many(self.name, payloads, **options)


_registry: dict[str, JobDefinition] = {}
_lock = threading.Lock()


def validate_job_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidJobOptions(f"job name must be a non-empty string, got {name!r}")
    if len(name) > MAX_JOB_NAME_LENGTH:
        raise InvalidJobOptions(f"job name is longer than {MAX_JOB_NAME_LENGTH} characters: {name[:40]!r}...")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise InvalidJobOptions(f"job name must be printable without whitespace, got {name!r}")
    return name


def register(definition: JobDefinition) -> JobDefinition:
    with _lock:
        existing = _registry.get(definition.name)
        if existing is not None and existing.func is not definition.func:
            same_code = getattr(existing.func, "__qualname__", None) == getattr(
                definition.func, "__qualname__", ""
            ) and (getattr(existing.func, "__module__", None) == getattr(definition.func, "__module__", ""))
            if not same_code:  # a module imported twice re-registers the same function
                used_by = f"{existing.func.__module__}.{existing.func.__qualname__}"
                raise InvalidJobOptions(f"job name {definition.name!r} is already used by {used_by}")
        _registry[definition.name] = definition
    return definition


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


# Fallback resolvers for names no @job registered, by name prefix. A resolver
# returns the definition or raises UnknownJobError saying why (the worker then
# dead-letters the job). A dotted path is imported on first use: the django.tasks
# resolver needs Django's Tasks framework, which a project may not have.
Resolver = Callable[[str], JobDefinition]
# The job names of django.tasks tasks start with this (tasks/naming.py).
TASK_NAME_PREFIX = "django.tasks:"
_resolvers: dict[str, Resolver | str] = {TASK_NAME_PREFIX: "django_jobqueue.tasks.resolve_job_name"}


def add_resolver(prefix: str, resolver: Resolver | str) -> None:
    """Resolve job names starting with ``prefix`` through ``resolver`` when no @job has them."""
    with _lock:
        _resolvers[prefix] = resolver


def _resolve(name: str) -> JobDefinition | None:
    for prefix, resolver in list(_resolvers.items()):
        if not name.startswith(prefix):
            continue
        try:
            if isinstance(resolver, str):
                from django.utils.module_loading import import_string

                resolver = import_string(resolver)
            return resolver(name)
        except UnknownJobError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the name cannot run
            raise UnknownJobError(f"unknown job name {name!r}: resolving it failed: {exc!r}") from exc
    return None


def get_definition(name: str) -> JobDefinition:
    definition = _registry.get(name)
    if definition is None and isinstance(name, str):
        definition = _resolve(name)
    if definition is None:
        raise UnknownJobError(f"unknown job name {name!r}: no @job with that name is registered")
    return definition


def all_definitions() -> dict[str, JobDefinition]:
    return dict(_registry)


def _dotted_path(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _build(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
    requeue_on_failure: bool = False,
    requeue_delay_seconds: float = 10.0,
    on_max_attempts_exhausted: Callable[..., Any] | None = None,
    preflight: Mapping[str, Any] | Preflight | None = None,
    backoff_base_seconds: float | None = None,
    backoff_max_seconds: float | None = None,
    **defaults: Any,
) -> JobDefinition:
    if not callable(func):
        raise InvalidJobOptions(f"@job decorates a function, got {func!r}")
    job_name = validate_job_name(name if name is not None else _dotted_path(func))
    where = f"@job({job_name!r})"
    schedule = _schedule_options(job_name, defaults)
    # Defaults take the same checks as enqueue(); delay and run_at make no sense here.
    for banned in ("delay", "run_at", "on_commit"):
        if banned in defaults:
            raise InvalidJobOptions(f"{where}: {banned} is given per enqueue(), not on the definition")
    validate({**defaults, "queue": queue, "max_attempts": max_attempts}, where=where)
    if schedule is not None and defaults.get("concurrency_key") is not None:
        raise InvalidJobOptions(
            f"{where}: a periodic job takes no concurrency_key (its runs would not carry it); "
            "overlap= decides whether runs may overlap"
        )
    if not isinstance(requeue_on_failure, bool):
        raise InvalidJobOptions(f"{where}: requeue_on_failure must be True or False")
    seconds_to_ms(f"{where}: requeue_delay_seconds", requeue_delay_seconds)
    for label, value in (("backoff_base_seconds", backoff_base_seconds), ("backoff_max_seconds", backoff_max_seconds)):
        if value is not None:
            seconds_to_ms(f"{where}: {label}", value)
    if on_max_attempts_exhausted is not None and not callable(on_max_attempts_exhausted):
        raise InvalidJobOptions(f"{where}: on_max_attempts_exhausted must be callable")
    if preflight is None:
        pre = Preflight()
    elif isinstance(preflight, Preflight):
        pre = preflight
    elif isinstance(preflight, Mapping):
        unknown = sorted(set(preflight) - PREFLIGHT_KEYS)
        if unknown:
            raise InvalidJobOptions(f"{where}: unknown preflight option(s): {', '.join(unknown)}")
        for hook in ("on_before_add", "okay_to_run"):
            if preflight.get(hook) is not None and not callable(preflight[hook]):
                raise InvalidJobOptions(f"{where}: preflight {hook} must be callable")
            if inspect.iscoroutinefunction(preflight.get(hook)):
                # Called synchronously (its coroutine would be a true value, never awaited).
                raise InvalidJobOptions(f"{where}: preflight {hook} must be a plain function, not async def")
        delay = preflight.get("requeue_delay_in_seconds", 60.0)
        seconds_to_ms(f"{where}: preflight requeue_delay_in_seconds", delay)
        pre = Preflight(preflight.get("on_before_add"), preflight.get("okay_to_run"), float(delay))
    else:
        raise InvalidJobOptions(f"{where}: preflight must be a dict, got {preflight!r}")
    return JobDefinition(
        name=job_name,
        func=func,
        queue=queue,
        max_attempts=max_attempts,
        requeue_on_failure=requeue_on_failure,
        requeue_delay_seconds=float(requeue_delay_seconds),
        on_max_attempts_exhausted=on_max_attempts_exhausted,
        preflight=pre,
        backoff_base_seconds=backoff_base_seconds,
        backoff_max_seconds=backoff_max_seconds,
        defaults={k: v for k, v in defaults.items() if k in ENQUEUE_OPTIONS},
        schedule=schedule,
    )


def _schedule_options(job_name: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """Take @job's schedule options (cron, every, ...) out of ``options``, checked."""
    from .engine.schedules import ScheduleError
    from .schedules import SCHEDULE_OPTIONS, check_options

    given = {k: options.pop(k) for k in list(options) if k in SCHEDULE_OPTIONS}
    if not given:
        return None
    try:
        check_options(job_name, given)
    except ScheduleError as exc:
        raise InvalidJobOptions(f"@job({job_name!r}): {exc}") from None
    return given


@overload
def job(func: F, /) -> F: ...
@overload
def job(*, name: str | None = ..., queue: str | None = ..., **options: Any) -> Callable[[F], F]: ...


def job(func: Any = None, /, **options: Any) -> Any:
    """Register a function as a job: ``@job`` or ``@job(name="email", ...)``.

    The function is returned unchanged (call it directly in tests), with
    ``.enqueue(payload, **options)``, ``.enqueue_many(...)`` and ``.definition``.
    """

    def decorate(f: F) -> F:
        definition = register(_build(f, **options))
        f.definition = definition  # type: ignore[attr-defined]
        f.job_name = definition.name  # type: ignore[attr-defined]
        f.enqueue = definition.enqueue  # type: ignore[attr-defined]
        f.enqueue_many = definition.enqueue_many  # type: ignore[attr-defined]
        return f

    if func is not None:
        return decorate(func)
    return decorate


def autodiscover() -> None:
    """Import ``jobs`` from every installed app (like admin.py)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("jobs")
