"""Every test run owns its Redis: a redis-server (or valkey-server) on a free
loopback port, started here and stopped by PID. Never the shared :6379."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings

from django_jobqueue import api, conf, connection
from django_jobqueue.devserver import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _point_jobqueue_at_private_server(redis_server, django_test_environment):
    settings.JOBQUEUE = {**copy.deepcopy(settings.JOBQUEUE), "REDIS_URL": redis_server.url}
    conf.get_settings.cache_clear()
    connection.reset()
    api.reset_queues()
    yield


@pytest.fixture(autouse=True)
def _clean_redis(redis_server):
    import redis

    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.close()
    yield


@pytest.fixture
def r(redis_server):
    """A decoded client on the private server, for looking at keys in tests."""
    import redis

    client = redis.Redis(port=redis_server.port, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def jobq_settings(settings):
    """Change JOBQUEUE for one test: jobq_settings(QUEUES={...})."""

    def change(**values):
        settings.JOBQUEUE = {**copy.deepcopy(settings.JOBQUEUE), **values}
        api.reset_queues()

    yield change
    api.reset_queues()
