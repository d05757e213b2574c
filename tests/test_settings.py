"""JOBQUEUE validation: every wrong key or type is a system-check error naming the key."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_jobqueue import ConfigurationError, enqueue
from django_jobqueue.checks import check_cache_alias, check_retention_bounds, check_settings
from django_jobqueue.conf import get_settings, validate
from django_jobqueue.connection import build_client, describe
from tests.helpers.config import problems


def test_no_setting_at_all_gives_the_documented_defaults():
    settings, errors = validate(None)
    assert errors == []
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.key_prefix == "queue" and settings.default_queue == "jobs"
    q = settings.queue()
    assert (q.name, q.visibility_ms, q.max_attempts, q.history) == ("jobs", 30_000, 3, 10_000)
    assert (q.completed_after_seconds, q.failed_after_seconds) == (3600, None)
    assert q.retry_jobs_running_before_restart is True and q.run_on_startup is False


def test_the_spec_example_is_valid():
    _settings, errors = validate(
        {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "KEY_PREFIX": "queue",
            "DEFAULT_QUEUE": "jobs",
            "QUEUES": {
                "jobs": {
                    "VISIBILITY_MS": 5000,
                    "CONCURRENT_JOBS": 10,
                    "MAX_ATTEMPTS": 3,
                    "HISTORY": 50,
                    "CLEANUP": {"COMPLETED_AFTER_SECONDS": 60, "FAILED_AFTER_SECONDS": None},
                    "RETRY_JOBS_RUNNING_BEFORE_RESTART": True,
                    "RUN_ON_STARTUP": False,
                }
            },
        }
    )
    assert errors == []


@pytest.mark.parametrize(
    "value, path, fragment",
    [
        ([], "JOBQUEUE", "must be a dict"),
        ({"REDIS_URLS": "x"}, "JOBQUEUE['REDIS_URLS']", "did you mean 'REDIS_URL'"),
        ({"REDIS_URL": "http://x"}, "JOBQUEUE['REDIS_URL']", "redis://"),
        ({"REDIS_URL": 6379}, "JOBQUEUE['REDIS_URL']", "redis://"),
        ({"CACHE_ALIAS": ""}, "JOBQUEUE['CACHE_ALIAS']", "non-empty string"),
        ({"KEY_PREFIX": "a:b"}, "JOBQUEUE['KEY_PREFIX']", "without spaces"),
        ({"KEY_PREFIX": ""}, "JOBQUEUE['KEY_PREFIX']", "non-empty"),
        ({"DEFAULT_QUEUE": "{x}"}, "JOBQUEUE['DEFAULT_QUEUE']", "without spaces"),
        ({"CLUSTER": "yes"}, "JOBQUEUE['CLUSTER']", "True or False"),
        ({"SENTINELS": [("h",)]}, "JOBQUEUE['SENTINELS']", "pairs"),
        ({"SENTINELS": [("h", 26379)]}, "JOBQUEUE['SENTINEL_SERVICE']", "must name"),
        ({"REDIS_OPTIONS": []}, "JOBQUEUE['REDIS_OPTIONS']", "a dict"),
        ({"CONNECT_TIMEOUT": 0}, "JOBQUEUE['CONNECT_TIMEOUT']", "positive number"),
        ({"SOCKET_TIMEOUT": float("nan")}, "JOBQUEUE['SOCKET_TIMEOUT']", "positive number"),
        ({"MAX_PAYLOAD_BYTES": 1.5}, "JOBQUEUE['MAX_PAYLOAD_BYTES']", "positive integer"),
        ({"SHUTDOWN_GRACE_SECONDS": -1}, "JOBQUEUE['SHUTDOWN_GRACE_SECONDS']", ">= 0"),
        ({"HEARTBEAT_SECONDS": 5, "WORKER_TIMEOUT_SECONDS": 10}, "JOBQUEUE['WORKER_TIMEOUT_SECONDS']", "3 x"),
        ({"QUEUES": []}, "JOBQUEUE['QUEUES']", "a dict"),
        ({"QUEUES": {"bad name": {}}}, "JOBQUEUE['QUEUES']['bad name']", "not a valid queue name"),
        ({"QUEUES": {"jobs": 5}}, "JOBQUEUE['QUEUES']['jobs']", "a dict"),
        ({"QUEUES": {"jobs": {"VISIBILITY": 5}}}, "JOBQUEUE['QUEUES']['jobs']['VISIBILITY']", "VISIBILITY_MS"),
        ({"QUEUES": {"jobs": {"VISIBILITY_MS": "5000"}}}, "['VISIBILITY_MS']", "positive integer"),
        ({"QUEUES": {"jobs": {"VISIBILITY_MS": True}}}, "['VISIBILITY_MS']", "positive integer"),
        ({"QUEUES": {"jobs": {"CONCURRENT_JOBS": 0}}}, "['CONCURRENT_JOBS']", "positive integer"),
        ({"QUEUES": {"jobs": {"MAX_ATTEMPTS": 0}}}, "['MAX_ATTEMPTS']", "positive integer"),
        ({"QUEUES": {"jobs": {"HISTORY": -1}}}, "['HISTORY']", ">= 0"),
        ({"QUEUES": {"jobs": {"CLEANUP": 60}}}, "['CLEANUP']", "a dict"),
        ({"QUEUES": {"jobs": {"CLEANUP": {"COMPLETED": 1}}}}, "['CLEANUP']['COMPLETED']", "not a known cleanup"),
        ({"QUEUES": {"jobs": {"CLEANUP": {"FAILED_AFTER_SECONDS": 0}}}}, "['FAILED_AFTER_SECONDS']", "None (keep)"),
        ({"QUEUES": {"jobs": {"RETRY_JOBS_RUNNING_BEFORE_RESTART": 1}}}, "['RETRY_JOBS", "True or False"),
        ({"QUEUES": {"jobs": {"RUN_ON_STARTUP": "no"}}}, "['RUN_ON_STARTUP']", "True or False"),
        ({"QUEUES": {"jobs": {"BACKOFF_BASE_SECONDS": -2}}}, "['BACKOFF_BASE_SECONDS']", ">= 0"),
    ],
)
def test_every_wrong_setting_is_an_error_naming_its_key(value, path, fragment):
    errors = problems(value)
    assert errors, value
    text = "\n".join(f"{p} {m}" for p, m in errors)
    assert path in text and fragment in text


def test_system_check_reports_errors_with_ids(settings):
    settings.JOBQUEUE = {"QUEUES": {"jobs": {"VISIBILITY_MS": -1, "NOPE": 1}}}
    errors = check_settings()
    assert {e.id for e in errors} == {"django_jobqueue.E001"}
    assert len(errors) == 2
    with pytest.raises(SystemCheckError, match="VISIBILITY_MS"):
        call_command("check")


@pytest.mark.parametrize(
    ("check", "jobqueue", "page"),
    [
        (check_settings, {"QUEUES": {"jobs": {"VISIBILITY_MS": -1}}}, '"Settings"'),
        (check_retention_bounds, {"QUEUES": {"jobs": {"HISTORY": None}}}, '"Settings", section "Retention"'),
    ],
)
def test_check_hints_name_a_page_of_the_documentation_not_a_repository_path(settings, check, jobqueue, page):
    # An installed package has no docs/ folder to look in.
    settings.JOBQUEUE = jobqueue
    (problem,) = check()
    assert f"the django-jobqueue documentation, page {page}" in problem.hint
    assert "docs/" not in problem.hint and ".md" not in problem.hint


def test_bad_settings_raise_configuration_error_on_first_use_not_a_stack_trace(settings):
    settings.JOBQUEUE = {"MAX_PAYLOAD_BYTES": "big"}
    with pytest.raises(ConfigurationError, match=r"JOBQUEUE\['MAX_PAYLOAD_BYTES'\] must be a positive integer"):
        enqueue("add", {})


def test_cache_alias_must_name_a_django_redis_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.JOBQUEUE = {"CACHE_ALIAS": "missing"}
    assert [e.id for e in check_cache_alias()] == ["django_jobqueue.E002"]
    settings.JOBQUEUE = {"CACHE_ALIAS": "default"}
    assert "not django-redis" in check_cache_alias()[0].msg


def test_cache_alias_reuses_the_django_redis_connection(settings, redis_server, r):
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url}}
    settings.JOBQUEUE = {"CACHE_ALIAS": "default"}
    assert check_cache_alias() == []
    job_id = enqueue("add", {"a": 1, "b": 2})
    assert r.lrange("queue:jobs:pending", 0, -1) == [job_id]
    from django_jobqueue import get_queue

    job = get_queue().claim(0)  # bytes replies from django-redis are handled too
    assert job.id == job_id and job.payload == {"a": 1, "b": 2}


def test_rediss_and_passwords_are_passed_to_redis_py_and_never_logged():
    settings, _ = validate({"REDIS_URL": "rediss://user:s3cret@redis.example:6380/2"})
    client = build_client(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == "s3cret" and kwargs["username"] == "user"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert "s3cret" not in describe(settings)
    assert describe(settings) == "rediss://redis.example:6380/2"


def test_settings_are_cached_and_cleared_when_changed(settings):
    first = get_settings()
    assert get_settings() is first
    settings.JOBQUEUE = {**settings.JOBQUEUE, "KEY_PREFIX": "other"}
    assert get_settings().key_prefix == "other"


def test_each_cache_built_from_the_settings_is_cleared_by_its_owner_when_they_change(settings):
    import ast
    import inspect as pyinspect

    from django_jobqueue import api, conf, connection

    client, queue = connection.get_client(), api.get_queue("jobs")
    settings.JOBQUEUE = {**settings.JOBQUEUE, "KEY_PREFIX": "other"}
    assert connection.get_client() is not client
    assert api.get_queue("jobs").keys.pending == "other:jobs:pending"
    assert api.get_queue("jobs") is not queue
    # conf.py reaches into no module above it to clear their caches.
    imported = {
        node.module or ""
        for node in ast.walk(ast.parse(pyinspect.getsource(conf)))
        if isinstance(node, ast.ImportFrom) and node.level == 1
    } | {
        alias.name
        for node in ast.walk(ast.parse(pyinspect.getsource(conf)))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
        for alias in node.names
    }
    assert not imported & {"api", "connection"}
