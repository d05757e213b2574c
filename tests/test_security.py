"""Security of the engine and its Redis connection: no pickle anywhere, claim tokens
from ``secrets``, a Redis ACL user limited to the queue's keys and channels, and TLS
that is verified and never downgraded.

(Escaping in the admin, permissions and CSRF are tested with the admin.)
"""

from __future__ import annotations

import ast
import secrets
from pathlib import Path

import pytest
import redis

import django_jobqueue
from django_jobqueue import QueueUnavailable, enqueue, get_queue, job
from django_jobqueue.devserver import RedisServer
from django_jobqueue.engine.ids import new_claim_token
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker import Worker
from tests.helpers.servers import TLSRedisServer, make_ca, needs_openssl, start_tls_server

PACKAGE = Path(django_jobqueue.__file__).parent


@job(name="security.echo")
def echo(payload, job):
    """A job that touches no key of its own, so it runs under the restricted user."""
    return payload


# ------------------------------------------------------------------- no pickle

UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "jsonpickle", "marshal", "shelve"}


def imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_pickle_is_imported_nowhere_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        unsafe = imported_modules(ast.parse(path.read_text("utf-8"), str(path))) & UNSAFE_MODULES
        if unsafe:
            offenders[str(path.relative_to(PACKAGE))] = sorted(unsafe)
    assert offenders == {}


def test_the_import_scan_would_see_pickle():
    sample = "import pickle\nfrom marshal import loads\n__import__('dill')\nimportlib.import_module('shelve')\n"
    assert imported_modules(ast.parse(sample)) >= {"pickle", "marshal", "dill", "shelve"}


# ---------------------------------------------------------------- claim tokens


def test_claim_tokens_come_from_secrets(monkeypatch, r):
    drawn = []

    def token_hex(nbytes: int) -> str:
        drawn.append(nbytes)
        return "ab" * nbytes

    monkeypatch.setattr(secrets, "token_hex", token_hex)
    assert new_claim_token() == "ab" * 16
    q = RedisJobQueue(r, "jobs")
    job_id = q.enqueue({})
    claimed = q.claim(0)
    assert claimed.claim_token == "ab" * 16 == r.hget(f"queue:jobs:job:{job_id}", "claim_token")
    assert 16 in drawn  # 128 bits per token


def test_claim_tokens_are_128_random_bits_never_repeated():
    tokens = {new_claim_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)


def test_ids_module_does_not_use_the_random_module():
    source = (PACKAGE / "engine" / "ids.py").read_text("utf-8")
    assert "random" not in imported_modules(ast.parse(source))
    assert "secrets" in imported_modules(ast.parse(source))


# ------------------------------------------------------------------ Redis ACL

# The commands django-jobqueue sends, for a Redis ACL user that may touch only
# the queue's keys and channels (KEY_PREFIX "queue"). Scripts run with their
# caller's permissions, so the commands the Lua scripts call are listed too.
# docs/reliability.md has the same line; keep them together.
ACL_COMMANDS = (
    # connecting, scripts
    "+ping +hello +evalsha +eval +script|load +wait "
    # strings, hashes
    "+get +mget +set +del +exists +expire +pexpire +persist +type +hget +hmget +hgetall +hset +hdel +hincrby "
    # lists, sets, sorted sets
    "+llen +lrange +lindex +lpush +lpop +rpush +rpop +lrem +ltrim +lmove +blmove +blpop "
    "+sadd +srem +smembers +scard "
    "+zadd +zrem +zcard +zscore +zrange +zrevrange +zrangebyscore +zremrangebyscore +zpopmin "
    # events: pub/sub and the events log (a stream)
    "+publish +spublish +subscribe +ssubscribe +unsubscribe +sunsubscribe +pubsub|numsub +pubsub|numpat "
    "+xadd +xrange +xrevrange +xinfo|stream "
    # the Redis clock; persistence settings, read by the worker's durability check
    "+time +info"
)
ACL_RULE = f"on >jobq-secret ~queue:* &queue:* resetchannels &queue:* -@all {ACL_COMMANDS}"


def test_every_command_a_script_calls_is_in_the_acl_line():
    import re

    granted = {c[1:].lower().split("|")[0] for c in ACL_COMMANDS.split()}  # "pubsub|numsub": pubsub
    called = set()
    for path in (PACKAGE / "engine" / "lua").glob("*.lua"):
        called |= {m.lower() for m in re.findall(r"redis\.p?call\('(\w+)'", path.read_text("utf-8"))}
    assert called and called <= granted, sorted(called - granted)


@pytest.fixture
def acl_server(jobq_settings):
    server = RedisServer().start()
    admin = redis.Redis(port=server.port, decode_responses=True)
    rule = ACL_RULE.split()
    if tuple(int(n) for n in admin.info("server")["redis_version"].split(".")[:2]) >= (7, 2):
        rule.append("+client|setinfo")  # redis-py names itself on connect (ignored where refused)
    admin.execute_command("ACL", "SETUSER", "jobq", "reset", *rule)
    jobq_settings(REDIS_URL=f"redis://jobq:jobq-secret@127.0.0.1:{server.port}/0")
    yield admin
    admin.close()
    server.cleanup()


def test_queue_works_as_an_acl_user_limited_to_its_prefix(acl_server):
    # A new server: its script cache is empty, so the user loads the scripts too.
    ids = [enqueue("security.echo", {"n": n}) for n in range(5)]
    ids.append(enqueue("security.echo", {"n": "later"}, delay=0.001, ttl=60, unique_key="u"))
    ids += get_queue().enqueue_many([{"n": 6}, {"n": 7}], name="security.echo")
    worker = Worker(["jobs"], burst=True)
    assert worker.run(install_signals=False) == 0
    assert worker.stats.completed >= 7
    q = get_queue()
    # The blocking claim and the sweeps, as a long-running worker does them.
    q.enqueue({"n": 8}, name="security.echo")
    claimed = q.claim(timeout_ms=500, worker_id="acl")
    assert claimed is not None and q.touch(claimed) and q.complete(claimed, "ok")
    q.sweep()
    q.stats()
    assert all(acl_server.hget(f"queue:jobs:job:{i}", "status") == "completed" for i in ids)
    # Nothing the queue did was refused.
    assert acl_server.execute_command("ACL", "LOG") == []


def test_the_acl_user_can_touch_nothing_else(acl_server):
    user = redis.Redis(
        port=acl_server.connection_pool.connection_kwargs["port"], username="jobq", password="jobq-secret"
    )
    refused = [
        lambda: user.get("other:key"),
        lambda: user.set("sessions:x", "1"),
        lambda: user.publish("other-channel", "x"),
        lambda: user.flushall(),
        lambda: user.keys("*"),
        lambda: user.config_set("appendonly", "no"),
        lambda: user.script_flush(),
        lambda: user.execute_command("ACL", "SETUSER", "jobq", "+@all"),
    ]
    for call in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    # Scripts run with the caller's rights: a key outside the prefix is refused inside one too.
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
        user.eval("return redis.call('GET', 'other:key')", 0)
    user.close()


def test_wrong_acl_password_is_refused(acl_server, jobq_settings):
    port = acl_server.connection_pool.connection_kwargs["port"]
    jobq_settings(REDIS_URL=f"redis://jobq:not-the-password@127.0.0.1:{port}/0")
    with pytest.raises(QueueUnavailable) as info:
        enqueue("security.echo", {})
    assert "not-the-password" not in str(info.value)


# ------------------------------------------------------------------------ TLS


@pytest.fixture
def tls_server(tmp_path):
    server = start_tls_server(tmp_path)
    yield server
    server.cleanup()


def direct(server: TLSRedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, ssl_ca_certs=str(server.ca_cert), decode_responses=True)


@needs_openssl
def test_enqueue_claim_complete_over_tls(tls_server, jobq_settings):
    jobq_settings(REDIS_URL=tls_server.url, REDIS_OPTIONS={"ssl_ca_certs": str(tls_server.ca_cert)})
    job_id = enqueue("security.echo", {"over": "tls"})
    q = get_queue()
    claimed = q.claim(timeout_ms=500)
    assert claimed.id == job_id and claimed.payload == {"over": "tls"}
    assert q.complete(claimed, {"ok": True}) is True
    worker = Worker(["jobs"], burst=True)
    enqueue("security.echo", {"n": 2})
    assert worker.run(install_signals=False) == 0 and worker.stats.completed == 1
    client = direct(tls_server)
    assert client.hget(f"queue:jobs:job:{job_id}", "status") == "completed"
    client.close()


@needs_openssl
def test_tls_with_a_bad_ca_is_refused_and_nothing_reaches_redis(tls_server, jobq_settings, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    _key, wrong_ca = make_ca(other, "not-the-servers-ca")
    jobq_settings(REDIS_URL=tls_server.url, REDIS_OPTIONS={"ssl_ca_certs": str(wrong_ca)})
    with pytest.raises(QueueUnavailable, match="certificate verify failed"):
        enqueue("security.echo", {})
    client = direct(tls_server)
    assert client.dbsize() == 0
    assert "cmdstat_evalsha" not in client.info("commandstats")
    client.close()


@needs_openssl
def test_a_rediss_url_never_falls_back_to_plain_text(redis_server, r, jobq_settings, tmp_path):
    """A TLS client pointed at a plain-text server fails; it never talks in clear."""
    _key, ca = make_ca(tmp_path, "ca")
    jobq_settings(
        REDIS_URL=f"rediss://127.0.0.1:{redis_server.port}/0",
        REDIS_OPTIONS={"ssl_ca_certs": str(ca)},
        CONNECT_TIMEOUT=1,
        SOCKET_TIMEOUT=1,
    )
    with pytest.raises(QueueUnavailable):
        enqueue("security.echo", {})
    assert r.keys("queue:*") == []
