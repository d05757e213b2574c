"""The connection to Redis keeps its secrets.

* TLS checks the server's host name against its certificate on every path (one
  Redis, a Sentinel-managed primary, a Cluster), whatever redis-py's default: a
  certificate the trusted CA issued to another host is refused.
* A password appears in no message (system checks, settings errors, command
  errors, logs, reprs), and ``REDIS_OPTIONS={"password": ...}``, which Django's
  error reports hide, works on every path.

Real servers only: a TLS redis-server with a certificate of ours, a Sentinel over
TLS, a one-node TLS cluster, a redis-server started with ``--requirepass``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import redis
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from django_jobqueue import ConfigurationError, QueueUnavailable, enqueue, get_queue, job
from django_jobqueue.checks import check_settings
from django_jobqueue.conf import validate
from django_jobqueue.connection import build_client, client_options, describe, sentinel_connection_options
from django_jobqueue.engine.redact import mask_credentials, mask_url, url_location
from tests.helpers.cluster import LocalCluster, LocalSentinelGroup, SentinelProcess, free_cluster_port
from tests.helpers.servers import PASSWORD, TLSRedisServer, needs_openssl, start_tls_server
from tests.helpers.waiting import wait_until

SECRET = PASSWORD  # the password_server fixture's, and the secret the messages below are checked for
OTHER_HOST = ("DNS:other.example",)  # a certificate from the trusted CA, for a host that is not ours
THIS_HOST = ("IP:127.0.0.1", "DNS:localhost")


@job(name="security.noop")
def noop(payload, job):
    return payload


def settings_of(**jobqueue):
    settings, errors = validate(jobqueue)
    assert errors == [], errors
    return settings


# ------------------------------------------------------------- masking URLs


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://default:s3cret-Pw@redis.example:6379/0", "redis://default:***@redis.example:6379/0"),
        ("rediss://:s3cret-Pw@10.0.0.1:6380/2", "rediss://:***@10.0.0.1:6380/2"),
        ("valkey://default:s3cret-Pw@h/0", "valkey://default:***@h/0"),  # a scheme we refuse: still masked
        ("redis://s3cret-Pw@h/0", "redis://***@h/0"),  # a password where the user goes
        ("redis://:s3cret#Pw/x@h/0", "redis://:***@h/0"),  # unescaped "#" and "/" in the password
        ("redis://h:6379/0?password=s3cret-Pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix://:s3cret-Pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("default:s3cret-Pw@h:6379", "default:***@h:6379"),  # the scheme forgotten
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),  # nothing to hide
    ],
)
def test_mask_url_hides_the_password_and_keeps_where_it_points(url, masked):
    assert mask_url(url) == masked


def test_mask_credentials_finds_every_url_in_free_text():
    text = "tried 'redis://app:s3cret-Pw@a:1/0' and \"rediss://b:2/0?sentinel_password=s3cret-Pw\", then gave up"
    assert mask_credentials(text) == (
        "tried 'redis://app:***@a:1/0' and \"rediss://b:2/0?sentinel_password=***\", then gave up"
    )


@pytest.mark.parametrize(
    "url, location",
    [
        ("rediss://u:s3cret-Pw@redis.example:6380/2", "rediss://redis.example:6380/2"),
        ("redis://:s3cret#Pw@h:6379/0", "redis://h:6379/0"),
        ("redis://h:6379/0?password=s3cret-Pw", "redis://h:6379/0"),
        ("unix://:s3cret-Pw@/run/redis.sock?db=3", "unix:///run/redis.sock"),
    ],
)
def test_the_location_of_a_url_has_no_credentials_at_all(url, location):
    assert url_location(url) == location
    assert describe(settings_of(REDIS_URL=url)) == location


# ------------------------------------------------- no password in messages


def test_the_system_check_never_echoes_the_password_of_a_bad_url(settings):
    settings.JOBQUEUE = {"REDIS_URL": f"valkey://default:{SECRET}@cache.internal:6379/0"}
    [error] = check_settings()
    assert error.id == "django_jobqueue.E001"
    assert SECRET not in error.msg
    assert "got 'valkey://default:***@cache.internal:6379/0'" in error.msg


def test_code_that_uses_bad_settings_raises_without_the_password(jobq_settings):
    # One slash: not a URL redis-py reads, so refused by the settings check, not deep inside redis-py.
    jobq_settings(REDIS_URL=f"redis:/default:{SECRET}@cache.internal:6379/0")
    with pytest.raises(ConfigurationError) as info:
        enqueue("security.noop", {})
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_a_management_command_with_a_bad_url_says_so_without_the_password(jobq_settings):
    jobq_settings(REDIS_URL=f"http://ops:{SECRET}@cache.internal/0")
    with pytest.raises(CommandError) as info:
        call_command("jobq_stats")
    assert "REDIS_URL" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(
    "values, path",
    [
        ({"REDIS_OPTIONS": f"password={SECRET}"}, "JOBQUEUE['REDIS_OPTIONS']"),
        (
            {"SENTINELS": [("s", 1)], "SENTINEL_SERVICE": "m", "SENTINEL_OPTIONS": [("password", SECRET)]},
            "JOBQUEUE['SENTINEL_OPTIONS']",
        ),
        ({"SENTINELS": [f"redis://:{SECRET}@s1:26379"], "SENTINEL_SERVICE": "m"}, "JOBQUEUE['SENTINELS']"),
    ],
)
def test_settings_that_may_hold_a_password_are_quoted_without_it(values, path):
    _settings, errors = validate(values)
    [message] = [message for where, message in errors if where == path]
    assert message.startswith("must be") and SECRET not in message


def test_the_settings_repr_shows_no_password():
    settings = settings_of(
        REDIS_URL=f"redis://app:{SECRET}@h/0",
        REDIS_OPTIONS={"password": SECRET},
        SENTINELS=[("s", 1)],
        SENTINEL_SERVICE="m",
        SENTINEL_OPTIONS={"password": SECRET},
    )
    assert SECRET not in repr(settings) and "key_prefix='queue'" in repr(settings)


def error_report_text(request) -> str:
    """The text of a 500 error report (what Django e-mails to ADMINS)."""
    try:
        raise RuntimeError("a view failed")
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info()).get_traceback_text()


def test_django_error_reports_hide_a_password_in_redis_options_but_not_in_the_url(settings):
    request = RequestFactory().get("/")
    settings.JOBQUEUE = {"REDIS_URL": "rediss://redis.internal:6380/0", "REDIS_OPTIONS": {"password": SECRET}}
    text = error_report_text(request)
    assert "JOBQUEUE" in text and "rediss://redis.internal:6380/0" in text and SECRET not in text
    # Why docs/security.md says so: a password in the URL is shown whole.
    settings.JOBQUEUE = {"REDIS_URL": f"rediss://:{SECRET}@redis.internal:6380/0"}
    assert SECRET in error_report_text(request)


# ------------------------------------------- the password in REDIS_OPTIONS


def test_a_password_in_redis_options_opens_one_redis(password_server, jobq_settings):
    jobq_settings(REDIS_URL=password_server.url, REDIS_OPTIONS={"password": SECRET})
    job_id = enqueue("security.noop", {"n": 1})
    claimed = get_queue().claim(timeout_ms=200)
    assert claimed.id == job_id and get_queue().complete(claimed, "ok")
    admin = redis.Redis(port=password_server.port, password=SECRET, decode_responses=True)
    assert admin.hget(f"queue:jobs:job:{job_id}", "status") == "completed"
    admin.close()


def test_without_the_password_one_redis_refuses_and_says_why(password_server, jobq_settings):
    jobq_settings(REDIS_URL=password_server.url)
    with pytest.raises(QueueUnavailable, match="(?i)auth"):
        enqueue("security.noop", {})


def test_a_password_in_redis_options_opens_a_sentinel_managed_primary(jobq_settings):
    with LocalSentinelGroup(password=SECRET) as group:
        jobq_settings(
            REDIS_URL="redis://mymaster/0",  # the sentinels name the host
            SENTINELS=group.sentinels,
            SENTINEL_SERVICE=group.service,
            REDIS_OPTIONS={"password": SECRET},
        )
        job_id = enqueue("security.noop", {"n": 1})
        primary = group.node(group.current_primary())
        assert primary.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


def test_a_password_in_redis_options_opens_a_cluster(jobq_settings):
    with LocalCluster(primaries=3, replicas=0) as cluster:
        for port in cluster.ports:
            cluster.node(port).config_set("requirepass", SECRET)  # after creation: redis-cli has no password
        jobq_settings(REDIS_URL=cluster.url, CLUSTER=True, REDIS_OPTIONS={"password": SECRET})
        job_id = enqueue("security.noop", {"n": 1})
        checker = cluster.client(password=SECRET)
        assert checker.hget(f"queue:{{jobs}}:job:{job_id}", "status") == "pending"
        checker.close()


# ---------------------------------------------------------- TLS host names


@pytest.mark.parametrize(
    "jobqueue",
    [
        {"REDIS_URL": "rediss://redis.example:6380/0"},
        {"REDIS_URL": "rediss://redis.example:6380/0", "CLUSTER": True},
        {"REDIS_URL": "redis://node.example:7000/0", "CLUSTER": True, "REDIS_OPTIONS": {"ssl": True}},
        {"REDIS_URL": "rediss://mymaster/0", "SENTINELS": [("s", 26379)], "SENTINEL_SERVICE": "mymaster"},
        {
            "REDIS_URL": "redis://mymaster/0",
            "SENTINELS": [("s", 26379)],
            "SENTINEL_SERVICE": "mymaster",
            "REDIS_OPTIONS": {"ssl": True},
        },
    ],
    ids=["one-redis", "cluster", "cluster-ssl-option", "sentinel-primary", "sentinel-primary-ssl-option"],
)
def test_tls_connections_ask_for_the_host_name_check_whatever_redis_py_defaults_to(jobqueue):
    # redis-py 5.x accepts a certificate for any host unless told: ours tells it.
    assert client_options(settings_of(**jobqueue))["ssl_check_hostname"] is True


def test_tls_connections_to_the_sentinels_ask_for_the_host_name_check():
    settings = settings_of(
        REDIS_URL="redis://mymaster/0",
        SENTINELS=[("s", 26379)],
        SENTINEL_SERVICE="mymaster",
        SENTINEL_OPTIONS={"ssl": True, "ssl_ca_certs": "/ca.crt"},
    )
    assert sentinel_connection_options(settings)["ssl_check_hostname"] is True
    client = build_client(settings)  # connects lazily
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["ssl_check_hostname"] is True
    assert "ssl_check_hostname" not in client.connection_pool.connection_kwargs  # the primary is plain text here
    client.close()


@pytest.mark.parametrize(
    "jobqueue",
    [
        {"REDIS_URL": "rediss://h/0", "REDIS_OPTIONS": {"ssl_check_hostname": False}},
        {"REDIS_URL": "rediss://h/0", "REDIS_OPTIONS": {"ssl_cert_reqs": "none"}},
        {"REDIS_URL": "rediss://h/0", "REDIS_OPTIONS": {"ssl_cert_reqs": None}},
        {"REDIS_URL": "rediss://h/0?ssl_cert_reqs=none"},
        {"REDIS_URL": "rediss://h/0?ssl_check_hostname=false"},
    ],
)
def test_an_explicit_choice_of_the_user_is_kept(jobqueue):
    options = client_options(settings_of(**jobqueue))
    assert options.get("ssl_check_hostname", False) is False


@pytest.mark.parametrize("url", ["redis://h:6379/0", "unix:///run/redis.sock"])
def test_plain_text_connections_get_no_tls_options(url):
    # A plain connection refuses TLS keyword arguments.
    assert "ssl_check_hostname" not in client_options(settings_of(REDIS_URL=url))
    build_client(settings_of(REDIS_URL=url)).connection_pool.make_connection()


@pytest.fixture
def other_host_server(tmp_path):
    server = start_tls_server(tmp_path / "other", OTHER_HOST)
    yield server
    server.cleanup()


@pytest.fixture
def this_host_server(tmp_path):
    server = start_tls_server(tmp_path / "this", THIS_HOST)
    yield server
    server.cleanup()


def unchecked_client(server: TLSRedisServer) -> redis.Redis:
    """A client of the test's own that trusts the server without its name, to look inside."""
    return redis.Redis(
        port=server.port, ssl=True, ssl_ca_certs=str(server.ca_cert), ssl_check_hostname=False, decode_responses=True
    )


@needs_openssl
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_one_redis_with_a_certificate_for_another_host_is_refused(other_host_server, jobq_settings, host):
    jobq_settings(
        REDIS_URL=f"rediss://{host}:{other_host_server.port}/0",
        REDIS_OPTIONS={"ssl_ca_certs": str(other_host_server.ca_cert)},
    )
    with pytest.raises(QueueUnavailable, match="mismatch"):
        enqueue("security.noop", {})
    with unchecked_client(other_host_server) as client:
        assert client.dbsize() == 0
        assert "cmdstat_evalsha" not in client.info("commandstats")


@needs_openssl
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_one_redis_with_a_certificate_for_its_host_is_accepted(this_host_server, jobq_settings, host):
    jobq_settings(
        REDIS_URL=f"rediss://{host}:{this_host_server.port}/0",
        REDIS_OPTIONS={"ssl_ca_certs": str(this_host_server.ca_cert)},
    )
    job_id = enqueue("security.noop", {})
    with unchecked_client(this_host_server) as client:
        assert client.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


@needs_openssl
def test_turning_verification_off_explicitly_still_connects(other_host_server, jobq_settings):
    """The user's own choice (never advised): no certificate check, so no host name
    to check either; asking for one anyway would make Python refuse every connection."""
    jobq_settings(
        REDIS_URL=f"rediss://127.0.0.1:{other_host_server.port}/0?ssl_cert_reqs=none",
        REDIS_OPTIONS={"ssl_ca_certs": str(other_host_server.ca_cert)},
    )
    assert enqueue("security.noop", {})


class TLSSentinel(SentinelProcess):
    """A sentinel that watches a TLS-only primary (it talks TLS to it and does
    not check host names, as Redis never does: only clients can)."""

    def __init__(self, primary: TLSRedisServer) -> None:
        super().__init__(primary.port, "mymaster", quorum=1, down_after_ms=30_000, failover_timeout_ms=60_000)
        with open(self.config, "a") as f:
            f.write(f"tls-replication yes\ntls-cert-file {primary.cert}\ntls-key-file {primary.key}\n")
            f.write(f"tls-ca-cert-file {primary.ca_cert}\n")


@contextlib.contextmanager
def sentinel_over_tls(server: TLSRedisServer):
    """A sentinel watching ``server`` over TLS, stopped on the way out."""
    sentinel = TLSSentinel(server).start()
    try:
        # The sentinel reaches the primary over TLS before the client asks it.
        wait_until(
            lambda: "disconnected" not in sentinel.client().sentinel_master("mymaster")["flags"],
            30,
            "the sentinel to reach the primary",
        )
        yield sentinel
    finally:
        sentinel.cleanup()


def tls_sentinel_settings(server: TLSRedisServer, sentinel: SentinelProcess) -> dict:
    return {
        "REDIS_URL": "rediss://mymaster/0",
        "SENTINELS": [("127.0.0.1", sentinel.port)],
        "SENTINEL_SERVICE": "mymaster",
        "REDIS_OPTIONS": {"ssl_ca_certs": str(server.ca_cert)},
    }


@needs_openssl
def test_a_sentinel_managed_primary_with_a_certificate_for_another_host_is_refused(other_host_server, jobq_settings):
    with sentinel_over_tls(other_host_server) as sentinel:
        jobq_settings(**tls_sentinel_settings(other_host_server, sentinel))
        with pytest.raises(QueueUnavailable, match="mismatch"):
            enqueue("security.noop", {})
        with unchecked_client(other_host_server) as client:
            assert client.dbsize() == 0


@needs_openssl
def test_a_sentinel_managed_primary_with_a_certificate_for_its_host_is_accepted(this_host_server, jobq_settings):
    with sentinel_over_tls(this_host_server) as sentinel:
        jobq_settings(**tls_sentinel_settings(this_host_server, sentinel))
        job_id = enqueue("security.noop", {})
        with unchecked_client(this_host_server) as client:
            assert client.hget(f"queue:jobs:job:{job_id}", "status") == "pending"


@contextlib.contextmanager
def tls_cluster_node(directory: Path, names):
    """A one-node Redis Cluster over TLS (clients and the cluster bus), serving
    every slot; yields (the node, the settings that reach it); stopped on the way out."""
    node = start_tls_server(
        directory,
        names,
        extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--tls-cluster", "yes"],
        port=free_cluster_port(),
    )
    try:
        with unchecked_client(node) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(lambda: client.cluster("info")["cluster_state"] == "ok", 30, "the cluster to serve its slots")
        yield (
            node,
            {
                "REDIS_URL": f"rediss://127.0.0.1:{node.port}/0",
                "CLUSTER": True,
                "REDIS_OPTIONS": {"ssl_ca_certs": str(node.ca_cert)},
            },
        )
    finally:
        node.cleanup()


@needs_openssl
def test_a_cluster_node_with_a_certificate_for_another_host_is_refused(tmp_path):
    with tls_cluster_node(tmp_path / "other", OTHER_HOST) as (node, jobqueue):
        # redis-py asks a node for the slot table as the client is made.
        with pytest.raises((redis.RedisError, redis.exceptions.RedisClusterException), match="mismatch"):
            build_client(settings_of(**jobqueue))
        with unchecked_client(node) as client:
            assert client.dbsize() == 0


@needs_openssl
def test_a_cluster_node_with_a_certificate_for_its_host_is_accepted(tmp_path, jobq_settings):
    with tls_cluster_node(tmp_path / "this", THIS_HOST) as (node, jobqueue):
        jobq_settings(**jobqueue)
        job_id = enqueue("security.noop", {})
        with unchecked_client(node) as client:
            assert client.hget(f"queue:{{jobs}}:job:{job_id}", "status") == "pending"
