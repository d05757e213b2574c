"""The fixtures every test module may use; shared helpers are in tests/helpers/.

Every test run owns its Redis: a redis-server (or valkey-server) on a free
loopback port, started here and stopped by PID. Never the shared :6379."""

from __future__ import annotations

import copy

import pytest

# The helpers assert too: pytest explains their failures as it does a test's.
# (Registered before anything imports them.)
pytest.register_assert_rewrite("tests.helpers")

from django.conf import settings  # noqa: E402

from django_jobqueue import api, conf, connection  # noqa: E402
from django_jobqueue.devserver import RedisServer  # noqa: E402
from tests.helpers.admin import logged_in, make_user  # noqa: E402
from tests.helpers.clock import Clock  # noqa: E402
from tests.helpers.servers import PASSWORD, PasswordRedisServer  # noqa: E402
from tests.helpers.waiting import wait_for  # noqa: E402


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

    from django_jobqueue.admin_views import CHART_BUCKETS

    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.close()
    CHART_BUCKETS.clear()  # what the admin read of the Redis just emptied
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


# ------------------------------------------------------------------- engine


@pytest.fixture
def clock():
    """A clock the test moves by hand (``clock.advance(seconds)``), for RedisJobQueue(clock=...)."""
    return Clock()


# ---------------------------------------------------------- other servers


@pytest.fixture
def replica(redis_server):
    """A redis-server replicating the session's, in sync before the test starts."""
    import redis

    server = RedisServer(["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    client = redis.Redis(port=server.port, decode_responses=True)
    wait_for(lambda: client.info("replication").get("master_link_status") == "up", what="the replica to sync")
    yield server
    client.close()
    server.cleanup()
    r = redis.Redis(port=redis_server.port)
    r.replicaof("NO", "ONE")  # the primary never was a replica; this is a no-op safety
    r.close()


@pytest.fixture
def password_server():
    """A redis-server of its own that asks for ``tests.helpers.servers.PASSWORD``
    (also its ``.password``)."""
    server = PasswordRedisServer(PASSWORD).start()
    yield server
    server.cleanup()


# ------------------------------------------------------- admin users


@pytest.fixture
def manager(django_user_model):
    """A client signed in as staff allowed to change jobs (manage_jobs)."""
    return logged_in(make_user(django_user_model, "manager", perms=("manage_jobs",)))


@pytest.fixture
def viewer(django_user_model):
    """A client signed in as staff allowed to look only (view_jobs)."""
    return logged_in(make_user(django_user_model, "viewer", perms=("view_jobs",)))


@pytest.fixture
def staff_without_permission(django_user_model):
    return logged_in(make_user(django_user_model, "staff"))


@pytest.fixture(autouse=True)
def _forget_the_first_request():
    """The first request a process serves starts RUN_ON_STARTUP workers, once
    (autostart.py); let a later test's first request count again."""
    yield
    from django_jobqueue import autostart

    autostart.stop()
