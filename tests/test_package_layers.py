"""The package's three layers, as docs/dev/architecture.md draws them: engine/
knows nothing of Django or of the rest of the package; worker/ drives the
engine and reads the Django face's settings, registry and client; the face
(the top level) knows both. No import cycle crosses from one layer to
another, and the public imports keep working."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import django_jobqueue
from tests.helpers.imports import imported_modules, modules_under, package_of
from tests.helpers.paths import ROOT

PACKAGE = Path(django_jobqueue.__file__).parent


def layer(module: str) -> str:
    """The layer a module of the package belongs to."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("engine", "worker"):
        return parts[1]
    return "django face"


def engine_offences(name: str, source: str, package: str) -> list[str]:
    """The imports of engine module ``name`` that reach Django or a module of
    the package outside engine/ (type-only imports count: they tie the
    engine's code to the other layers' names)."""
    offences = []
    for line, module in imported_modules(source, package):
        top = module.split(".")[0]
        outside = top == "django_jobqueue" and module != "django_jobqueue" and layer(module) != "engine"
        if top == "django" or outside:
            offences.append(f"{name}:{line} imports {module}")
    return offences


def runtime_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it runs (at module level
    or inside functions; not the imports only a type checker reads)."""
    modules = modules_under(PACKAGE)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = imported_modules(path.read_text(), package_of(name, path), runtime_only=True)
        found = set()
        for _line, module in imported:
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
            parts = module.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {module for module in found if module in modules and module != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_engine_imports_nothing_of_django_nor_of_the_other_layers() -> None:
    engine = {name: path for name, path in modules_under(PACKAGE).items() if layer(name) == "engine"}
    assert {"django_jobqueue.engine.queue", "django_jobqueue.engine.scripts", "django_jobqueue.engine.keys"} <= set(
        engine
    )
    offences = [
        o for name, path in engine.items() for o in engine_offences(name, path.read_text(), package_of(name, path))
    ]
    assert offences == [], "the engine must stay free of Django and of worker/:\n" + "\n".join(offences)


def test_the_engine_check_sees_every_way_of_reaching_outside() -> None:
    source = textwrap.dedent(
        """
        import json
        from redis.exceptions import NoScriptError
        from . import scripts
        from .keys import QueueKeys
        from django.conf import settings
        import django.db
        from .. import api
        from ..worker.fetcher import Fetcher
        def late():
            from ..conf import get_settings
        if TYPE_CHECKING:
            from ..registry import JobDefinition
        """
    )
    assert [
        o.split(" imports ")[1]
        for o in engine_offences("django_jobqueue.engine.queue", source, "django_jobqueue.engine")
    ] == [
        "django.conf",
        "django.conf.settings",
        "django.db",
        "django_jobqueue.api",
        "django_jobqueue.worker.fetcher",
        "django_jobqueue.worker.fetcher.Fetcher",
        "django_jobqueue.conf",
        "django_jobqueue.conf.get_settings",
        "django_jobqueue.registry",
        "django_jobqueue.registry.JobDefinition",
    ]


def test_the_engine_runs_without_django_installed(redis_server) -> None:
    """Every engine module loads, and a job goes through, in a Python where
    importing Django fails."""
    program = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        class NoDjango:
            def find_spec(self, name, path=None, target=None):
                if name == "django" or name.startswith("django."):
                    raise ImportError("Django is not installed here")
                return None

        sys.meta_path.insert(0, NoDjango())
        import django_jobqueue.engine as engine
        for module in pkgutil.walk_packages(engine.__path__, "django_jobqueue.engine."):
            importlib.import_module(module.name)
        import redis
        from django_jobqueue.engine.queue import RedisJobQueue
        q = RedisJobQueue(redis.Redis(port={redis_server.port}, decode_responses=True), "no-django")
        job_id = q.enqueue({{"n": 1}})
        job = q.claim(timeout_ms=1000)
        assert job is not None and job.id == job_id and q.complete(job, {{"ok": True}})
        assert not any(name == "django" or name.startswith("django.") for name in sys.modules)
        print("ran", job_id)
        """
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ran ")


def test_no_import_cycle_crosses_a_layer() -> None:
    graph = runtime_graph()
    assert graph["django_jobqueue.worker.worker"] >= {"django_jobqueue.engine.queue", "django_jobqueue.api"}
    crossing = [c for c in cycles(graph) if len({layer(m) for m in c}) > 1]
    assert crossing == [], f"import cycles across layers: {crossing}"


def test_cycles_are_found_with_every_module_in_them() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_public_imports_keep_working() -> None:
    from django_jobqueue import exceptions
    from django_jobqueue.engine import exceptions as engine_exceptions
    from django_jobqueue.queue import ClaimedJob, Outcome, RedisJobQueue, Refusal  # noqa: F401
    from django_jobqueue.signals import job_completed, job_event  # noqa: F401
    from django_jobqueue.worker import Worker  # noqa: F401

    assert {"job", "enqueue", "enqueue_many", "get_queue", "JobQueueError", "ConfigurationError"} <= set(
        django_jobqueue.__all__
    )
    for name in django_jobqueue.__all__:
        value = getattr(django_jobqueue, name)
        if isinstance(value, type):
            assert value is getattr(exceptions, name) and issubclass(value, engine_exceptions.JobQueueError)
    assert exceptions.PayloadError is engine_exceptions.PayloadError
    assert django_jobqueue.enqueue.__module__ == "django_jobqueue.api"
    assert django_jobqueue.job.__module__ == "django_jobqueue.registry"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = django_jobqueue.nothing


def test_the_queue_users_import_encodes_as_django_does_the_engine_as_json_does(r) -> None:
    """shared/SPEC.md: payloads are encoded as Django's JSON encoder does, on
    django_jobqueue.queue.RedisJobQueue too; the engine's own encoder is the
    standard library's, and refuses what it does not know."""
    from django_jobqueue.engine import queue as engine
    from django_jobqueue.engine.exceptions import PayloadError
    from django_jobqueue.queue import RedisJobQueue

    when = datetime.datetime(2026, 12, 6, 7, 0, tzinfo=datetime.UTC)
    job_id = RedisJobQueue(r, "django").enqueue({"at": when})
    assert r.hget(f"queue:django:job:{job_id}", "payload") == '{"at":"2026-12-06T07:00:00Z"}'
    with pytest.raises(PayloadError, match="not JSON-encodable"):
        engine.RedisJobQueue(r, "plain").enqueue({"at": when})
    assert r.llen("queue:plain:pending") == 0


def test_a_web_process_importing_the_tasks_backend_loads_no_worker_runtime() -> None:
    program = textwrap.dedent(
        """
        import sys
        import django
        django.setup()
        import django_jobqueue.tasks
        from django_jobqueue.worker.job import Job
        loaded = sorted(m for m in sys.modules if m.startswith("django_jobqueue.worker."))
        print(" ".join(loaded))
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["django_jobqueue.worker.job"]
