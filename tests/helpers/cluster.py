"""Private Redis Clusters and Sentinel groups for the tests and bench/scaling.py.

Every server is a redis-server of ours on a free 127.0.0.1 port, in its own
temporary directory, stopped (or SIGKILLed) by PID; never the shared :6379.

    with LocalCluster(primaries=3, replicas=1) as cluster:
        client = cluster.client()                     # redis.cluster.RedisCluster
        names = cluster.queue_names_on_distinct_primaries(3)
        cluster.manual_failover(cluster.primary_for_queue(names[0]))
        cluster.kill(...)

    with LocalSentinelGroup() as group:
        group.sentinels            # [("127.0.0.1", port), ...] for JOBQUEUE["SENTINELS"]
        group.kill_primary(); group.wait_for_new_primary(old)
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster, key_slot

from django_jobqueue.devserver import RedisServer, find_server_binary, free_port, terminate
from tests.helpers.waiting import wait_until

# Fast failure detection: a primary that does not answer for this long is
# failed over by its replica (cluster), or declared down (sentinel).
NODE_TIMEOUT_MS = 1000


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: Iterable[int] = ()) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    taken = set(taken)
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and port not in taken and port + 10000 not in taken and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (p, p + 10000) found on 127.0.0.1")


def _client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=port, password=password, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)


@dataclass
class NodeInfo:
    port: int
    node_id: str
    role: str  # "master" or "slave", as CLUSTER NODES says
    primary_id: str  # the primary's node id for a replica, "" for a primary
    slots: list[tuple[int, int]]


class LocalCluster:
    """A Redis Cluster of ``primaries`` x (1 + ``replicas``) nodes on loopback."""

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        extra: Sequence[str] = (),
    ) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra = list(extra)
        self.servers: dict[int, RedisServer] = {}
        self._clients: dict[int, redis.Redis] = {}

    # -------------------------------------------------------------- lifecycle

    def _server(self, port: int) -> RedisServer:
        server = RedisServer(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                # A replica whose link was down long still takes over: tests
                # kill primaries on purpose and want the failover, always.
                "--cluster-replica-validity-factor",
                "0",
                # Keep serving the slots that are still covered while one
                # shard fails over, as production clusters usually do.
                "--cluster-require-full-coverage",
                "no",
                *self.extra,
            ],
            port=port,
        )
        return server

    def start(self, timeout: float = 60.0) -> LocalCluster:
        ports: list[int] = []
        for _ in range(self.primaries * (1 + self.replicas)):
            ports.append(free_cluster_port(ports + [p + 10000 for p in ports]))
        try:
            for port in ports:
                self.servers[port] = self._server(port).start()
            cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
            if cli is None:
                raise RuntimeError("redis-cli (or valkey-cli) is needed to create a cluster")
            done = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for server in self.servers.values():
            server.cleanup()
        self.servers.clear()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ---------------------------------------------------------------- looking

    @property
    def ports(self) -> list[int]:
        return sorted(self.servers)

    def alive_ports(self) -> list[int]:
        return [p for p, s in sorted(self.servers.items()) if s.proc is not None and s.proc.poll() is None]

    @property
    def url(self) -> str:
        """A URL naming one live node: enough for RedisCluster to find the rest."""
        return f"redis://127.0.0.1:{self.alive_ports()[0]}/0"

    def node(self, port: int) -> redis.Redis:
        if port not in self._clients:
            self._clients[port] = _client(port)
        return self._clients[port]

    def client(self, **options: Any) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.alive_ports()[0], decode_responses=True, **options)

    def nodes(self, via: int | None = None) -> list[NodeInfo]:
        """CLUSTER NODES as seen from ``via`` (a live node), failed nodes left out."""
        port = via or self.alive_ports()[0]
        out = []
        for addr, n in self.node(port).execute_command("CLUSTER NODES").items():
            flags = n["flags"].split(",")
            if "fail" in flags or "noaddr" in flags or "handshake" in flags:
                continue
            slots = [(int(r[0]), int(r[-1])) for r in n["slots"]]
            role = "master" if "master" in flags else "slave"
            primary = "" if n["master_id"] == "-" else n["master_id"]
            out.append(NodeInfo(int(addr.rsplit(":", 1)[1]), n["node_id"], role, primary, slots))
        return out

    def primary_ports(self) -> list[int]:
        return sorted(n.port for n in self.nodes() if n.role == "master" and n.slots)

    def owner_of_slot(self, slot: int) -> int:
        for n in self.nodes():
            if n.role == "master" and any(a <= slot <= b for a, b in n.slots):
                return n.port
        raise LookupError(f"no live primary serves slot {slot}")

    def replicas_of(self, primary_port: int) -> list[int]:
        nodes = self.nodes()
        pid = next(n.node_id for n in nodes if n.port == primary_port)
        return sorted(n.port for n in nodes if n.primary_id == pid)

    def primary_for_queue(self, queue: str) -> int:
        """The port of the primary holding queue ``queue`` (its ``{queue}`` hash tag)."""
        return self.owner_of_slot(key_slot(queue.encode()))

    def queue_names_on_distinct_primaries(self, count: int, stem: str = "q") -> list[str]:
        """``count`` queue names whose hash tags live on ``count`` different primaries."""
        primaries = self.primary_ports()
        if count > len(primaries):
            raise ValueError(f"only {len(primaries)} primaries for {count} queues")
        names: dict[int, str] = {}
        for n in range(10_000):
            name = f"{stem}{n}"
            owner = self.owner_of_slot(key_slot(name.encode()))
            names.setdefault(owner, name)
            if len(names) == count:
                return [names[p] for p in sorted(names)]
        raise RuntimeError("could not spread queue names over the primaries")

    def queue_names_on_one_primary(self, count: int, stem: str = "q") -> list[str]:
        """``count`` queue names that all live on the same primary."""
        target = self.primary_ports()[0]
        names = []
        for n in range(100_000):
            name = f"{stem}{n}"
            if self.owner_of_slot(key_slot(name.encode())) == target:
                names.append(name)
                if len(names) == count:
                    return names
        raise RuntimeError("could not find queue names on one primary")

    # ----------------------------------------------------------------- health

    def _healthy(self) -> bool:
        alive = self.alive_ports()
        for port in alive:
            if not self._node_ok(port):
                return False
        # Every live node agrees on who serves every slot.
        views = []
        for port in alive:
            views.append(sorted((n.port, tuple(n.slots)) for n in self.nodes(port) if n.role == "master" and n.slots))
        return all(v == views[0] for v in views) and len(views[0]) == self.primaries

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_until(self._healthy, timeout, "cluster_state:ok on every node, with one view of the slots")

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until every replica holds all its primary has written (offsets equal)."""

        def caught_up() -> bool:
            for primary in self.primary_ports():
                offset = self.node(primary).info("replication")["master_repl_offset"]
                for replica in self.replicas_of(primary):
                    if self.node(replica).info("replication").get("slave_repl_offset") != offset:
                        return False
            return True

        wait_until(caught_up, timeout, "the replicas to catch up")

    def flushall(self) -> None:
        for port in self.primary_ports():
            self.node(port).flushall()
            self.node(port).script_flush()
        self.wait_replicated()

    def commandstats(self, ports: Sequence[int] | None = None) -> dict[str, int]:
        """INFO commandstats summed over ``ports`` (default: the primaries): command -> calls."""
        total: dict[str, int] = {}
        for port in ports or self.primary_ports():
            for name, stats in self.node(port).info("commandstats").items():
                total[name.removeprefix("cmdstat_")] = total.get(name.removeprefix("cmdstat_"), 0) + int(stats["calls"])
        return total

    def describe(self, queues: Sequence[str]) -> str:
        """Each live node's role, replication state and keys per queue slot,
        for a failure message."""
        lines = []
        for port in self.alive_ports():
            node = self.node(port)
            replication = node.info("replication")
            slots = {q: node.execute_command("CLUSTER COUNTKEYSINSLOT", key_slot(q.encode())) for q in queues}
            lines.append(
                f"{port}: {replication.get('role')} of {replication.get('master_port', '-')}"
                f" link {replication.get('master_link_status', '-')}"
                f" offset {replication.get('master_repl_offset')} keys {node.dbsize()} per queue {slots}"
            )
        return "; ".join(lines)

    # --------------------------------------------------------------- failures

    def manual_failover(self, primary_port: int, timeout: float = 30.0) -> int:
        """CLUSTER FAILOVER on a replica of ``primary_port``: a coordinated
        switch with no lost writes. Returns the new primary's port."""
        replica = self.replicas_of(primary_port)[0]
        self.node(replica).execute_command("CLUSTER FAILOVER")
        wait_until(
            lambda: replica in self.primary_ports() and primary_port not in self.primary_ports(),
            timeout,
            f"{replica} to take over from {primary_port}",
        )
        self.wait_healthy(timeout)
        return replica

    def kill(self, port: int) -> None:
        """SIGKILL one node: whatever it had not replicated is gone."""
        server = self.servers[port]
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
        server.proc = None
        client = self._clients.pop(port, None)
        if client is not None:
            client.close()

    def wait_failed_over(self, old_primary: int, replica_candidates: Sequence[int], timeout: float = 30.0) -> int:
        """Until one of ``replica_candidates`` serves the slots of ``old_primary``."""

        def promoted() -> int | None:
            primaries = self.primary_ports()
            return next((p for p in replica_candidates if p in primaries), None)

        new = wait_until(promoted, timeout, f"a replica of {old_primary} to be promoted")
        wait_until(lambda: self._covered(), timeout, "every slot to be served again")
        return new

    def _covered(self) -> bool:
        return all(self._node_ok(port) for port in self.alive_ports())

    def _node_ok(self, port: int) -> bool:
        info = self.node(port).execute_command("CLUSTER INFO")
        return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its old port and files: it rejoins
        (as a replica of whoever took its slots)."""
        self.servers[port].start()
        wait_until(
            lambda: any(n.port == port for n in self.nodes(port) if n.primary_id) and self._covered(),
            timeout,
            f"node {port} to rejoin as a replica",
        )
        self.wait_healthy(timeout)


# ------------------------------------------------------------------ sentinel


class SentinelProcess:
    """One ``redis-server --sentinel`` on a free port, config in a temp dir."""

    def __init__(
        self,
        primary_port: int,
        service: str,
        *,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        primary_password: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="jobq-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {os.path.join(self.dir, 'sentinel.log')}",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if primary_password:
            lines.append(f"sentinel auth-pass {service} {primary_password}")
        if password:
            # Clients and the other sentinels must give it.
            lines += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = _client(self.port, self.password)
        return self._client

    def start(self, timeout: float = 10.0) -> SentinelProcess:
        self.proc = subprocess.Popen(
            [find_server_binary(), self.config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: self.client().ping(), timeout, f"sentinel on {self.port}")
        return self

    def cleanup(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        terminate(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalSentinelGroup:
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2).

    With ``password`` the data nodes require it (and replicas use it to sync);
    with ``sentinel_password`` the sentinels require theirs.
    """

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "mymaster",
        down_after_ms: int = NODE_TIMEOUT_MS,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.service = service
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.sentinel_password = sentinel_password
        self.servers: dict[int, RedisServer] = {}
        self.sentinel_procs: list[SentinelProcess] = []
        self.first_primary = 0
        self._clients: dict[int, redis.Redis] = {}

    def _secure(self, port: int) -> None:
        """Require the password (set at run time, so RedisServer's plain PING
        can see the server come up)."""
        if self.password:
            client = redis.Redis(port=port, socket_timeout=2)
            client.config_set("masterauth", self.password)
            client.config_set("requirepass", self.password)
            client.close()

    def start(self, timeout: float = 30.0) -> LocalSentinelGroup:
        try:
            primary = RedisServer().start()
            self.servers[primary.port] = primary
            self.first_primary = primary.port
            self._secure(primary.port)
            for _ in range(self.replica_count):
                replica = RedisServer(["--replicaof", "127.0.0.1", str(primary.port)]).start()
                self._secure(replica.port)
                self.servers[replica.port] = replica
            wait_until(
                lambda: all(
                    self.node(p).info("replication").get("master_link_status") == "up"
                    for p in self.servers
                    if p != primary.port
                ),
                timeout,
                "the replicas to sync",
            )
            for _ in range(self.sentinel_count):
                self.sentinel_procs.append(
                    SentinelProcess(
                        primary.port,
                        self.service,
                        quorum=2,
                        down_after_ms=self.down_after_ms,
                        failover_timeout_ms=self.failover_timeout_ms,
                        primary_password=self.password,
                        password=self.sentinel_password,
                    ).start()
                )
            # Every sentinel knows the others and the replicas before we test a failover.
            wait_until(self._sentinels_ready, timeout, "the sentinels to find each other and the replicas")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _sentinels_ready(self) -> bool:
        for s in self.sentinel_procs:
            info = s.client().execute_command("SENTINEL", "MASTER", self.service)
            fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else info
            if int(fields["num-other-sentinels"]) != self.sentinel_count - 1:
                return False
            if int(fields["num-slaves"]) != self.replica_count:
                return False
        return True

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinel_procs]

    def current_primary(self) -> int:
        """The primary's port as most sentinels report it."""
        votes: dict[int, int] = {}
        for s in self.sentinel_procs:
            try:
                _host, port = s.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except (redis.RedisError, OSError):
                continue
            votes[int(port)] = votes.get(int(port), 0) + 1
        return max(votes, key=lambda p: votes[p])

    def node(self, port: int) -> redis.Redis:
        if port not in self._clients:
            self._clients[port] = _client(port, self.password)
        return self._clients[port]

    def kill(self, port: int) -> None:
        """SIGKILL a data node: whatever it had not replicated is gone."""
        self.servers[port].kill()

    def restart(self, port: int, timeout: float = 60.0) -> None:
        """Start a killed node again on its port: the sentinels make it a
        replica of the current primary.

        Sentinel is slow at this by design: it reads a replica's INFO every
        10 s, and turns an instance that came back as a primary into a
        replica only once it has been up, and reported that role, for more
        than 8 s (four hello periods), on a later read; then the full sync.
        About 20 s on an idle machine, and 30 s was once too short on 2 busy
        cores: hence 60 s.
        """
        self.servers[port].start()
        self._secure(port)
        wait_until(
            lambda: self.node(port).info("replication").get("master_link_status") == "up",
            timeout,
            f"{port} to rejoin as a replica",
        )

    def wait_for_new_primary(self, old: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a new primary that answers as one."""

        def promoted() -> int | None:
            port = self.current_primary()
            if port == old:
                return None
            return port if self.node(port).info("replication")["role"] == "master" else None

        return wait_until(promoted, timeout, "the sentinels to promote a replica")

    def wait_replicated(self, timeout: float = 30.0) -> None:
        primary = self.current_primary()

        def caught_up() -> bool:
            offset = self.node(primary).info("replication")["master_repl_offset"]
            return all(
                self.node(p).info("replication").get("slave_repl_offset") == offset
                for p, s in self.servers.items()
                if p != primary and s.proc is not None
            )

        wait_until(caught_up, timeout, "the replicas to catch up")

    def cleanup(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for s in self.sentinel_procs:
            s.cleanup()
        self.sentinel_procs.clear()
        for server in self.servers.values():
            server.cleanup()
        self.servers.clear()

    def __enter__(self) -> LocalSentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# ------------------------------------------------------------------ workers


def cluster_worker_env(redis_url: str, queues: Sequence[str], ledger_url: str, **extra: str) -> dict[str, str]:
    """Environment for a jobq_worker process on tests.settings_cluster (start it
    with tests.helpers.workers.start_logged_worker)."""
    from tests.helpers.workers import worker_env  # imports the worker: not for bench/scaling.py

    return worker_env(
        redis_url,
        "tests.settings_cluster",
        JOBQUEUE_TEST_QUEUES=",".join(queues),
        JOBQUEUE_TEST_LEDGER_URL=ledger_url,
        **extra,
    )


class CompletedSignals:
    """The ids whose ``job_completed`` signal fired in this process, heard by an
    events listener on ``queues`` (subscribed before this returns); ``stop()``
    ends both."""

    def __init__(self, queues: Sequence[str]) -> None:
        from django_jobqueue import signals
        from django_jobqueue.events import start_listener_thread

        self.seen: set[str] = set()
        self._lock = threading.Lock()
        self._signal = signals.job_completed
        self._signal.connect(self._receive, weak=False)
        self.listener = start_listener_thread(list(queues))
        assert self.listener.listener.ready.wait(20), "the events listener did not subscribe"

    def _receive(self, sender: Any, job_id: str, **kwargs: Any) -> None:
        with self._lock:
            self.seen.add(job_id)

    def stop(self) -> None:
        self.listener.stop(timeout=10)
        self._signal.disconnect(self._receive)


# ------------------------------------------------------------------ counting


def server_major_version() -> int:
    """The major version of the redis-server the tests run (0 if unknown)."""
    import re

    from django_jobqueue.devserver import server_version

    try:
        match = re.search(r"v=(\d+)\.", server_version())
    except (OSError, RuntimeError):
        return 0
    return int(match.group(1)) if match else 0


def enqueue_jobs(
    client: Any, names: Sequence[str], per_queue: int, *, sleep: float, cluster: bool
) -> dict[str, list[str]]:
    """``per_queue`` "ledger" jobs on each queue, through the engine (the
    test process does not know the job; the workers do)."""
    from django_jobqueue.queue import RedisJobQueue

    return {
        name: RedisJobQueue(client, name, cluster=cluster).enqueue_many(
            [{"n": n, "sleep": sleep} for n in range(per_queue)], name="ledger"
        )
        for name in names
    }


def job_statuses(
    client: Any, jobs: Sequence[tuple[str, str]], *, fields: Sequence[str] = ("status",), cluster: bool = True
) -> Any:
    """The ``status`` of each (queue, id), in order; with several ``fields``,
    a dict id -> their values. Redis errors while a failover settles count as
    "unknown", so callers simply poll again."""
    from django_jobqueue.engine.keys import QueueKeys

    try:
        pipe = client.pipeline(transaction=False)
        for name, job_id in jobs:
            pipe.hmget(QueueKeys("queue", name, cluster).job(job_id), *fields)
        values = pipe.execute()
    except redis.RedisError:
        return ["unknown"] * len(jobs)
    if list(fields) == ["status"]:
        return [v[0] for v in values]
    return {job_id: v for (_name, job_id), v in zip(jobs, values, strict=True)}


class Ledger:
    """What tests.clusterapp's job recorded: one entry per run started, with
    markers the test pushes around a failover."""

    KEY = "test:ledger"
    FAILOVER = "-- failover --"
    RECOVERED = "-- recovered --"

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = list(entries)
        self._runs = [(n, e.split(":")) for n, e in enumerate(self.entries) if not e.startswith("--")]

    def runs(self) -> collections.Counter[str]:
        """job id -> how many times it started."""
        return collections.Counter(parts[1] for _n, parts in self._runs)

    def duplicates(self) -> dict[str, int]:
        return {job_id: n for job_id, n in self.runs().items() if n > 1}

    def runs_of(self, queue: str) -> int:
        """How many runs of ``queue``'s jobs started."""
        return sum(1 for _n, parts in self._runs if parts[0] == queue)

    def queue_of(self, job_id: str) -> str:
        return next(parts[0] for _n, parts in self._runs if parts[1] == job_id)

    def first_run(self, job_id: str) -> int:
        """The ledger position of the job's first run."""
        return next(n for n, parts in self._runs if parts[1] == job_id)

    def last_recovery(self) -> int:
        return max(n for n, e in enumerate(self.entries) if e == self.RECOVERED)
