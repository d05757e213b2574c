"""Redis servers a test starts besides the session's: one that asks for a
password, one that speaks TLS only (with a CA and certificates of ours), and a
proxy in front of a server that can lose a reply or stall."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from django_jobqueue.devserver import RedisServer, free_port

# The password of the ``password_server`` fixture.
PASSWORD = "s3cret-Pw"  # noqa: S105 - a throwaway server's


# --------------------------------------------------------------- a password


class PasswordRedisServer(RedisServer):
    """redis-server started with ``--requirepass``; checked ready with AUTH."""

    def __init__(self, password: str) -> None:
        self.password = password
        super().__init__(["--requirepass", password])

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = s.recv(64)
                    if not chunk:
                        return False
                    reply += chunk
                return reply == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False


# -------------------------------------------------------------------- TLS

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}"]
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a CA must say what its key may do.
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True,
        capture_output=True,
    )
    return key, cert


def make_server_cert(
    directory: Path, ca_key: Path, ca_cert: Path, names: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost")
) -> tuple[Path, Path]:
    """A server certificate from the CA for ``names`` (subject alternative names)."""
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.cnf"
    common_name = next((n.removeprefix("DNS:") for n in names if n.startswith("DNS:")), "server")
    # What Python 3.13's strict verification (VERIFY_X509_STRICT) asks of a server certificate.
    ext.write_text(
        f"subjectAltName={','.join(names)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    subprocess.run(
        ["openssl", "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-keyout", key, "-out", csr, "-subj", f"/CN={common_name}"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert, "-days", "2", "-extfile", ext],
        check=True,
        capture_output=True,
    )
    return key, cert


class TLSRedisServer(RedisServer):
    """redis-server with TLS only (``--port 0``): checked ready over TLS. Its
    certificate names ``names``; ``extra`` are more redis-server options."""

    def __init__(
        self,
        directory: Path,
        names: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost"),
        extra: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.ca_key, self.ca_cert = make_ca(directory, "ca")
        self.key, self.cert = make_server_cert(directory, self.ca_key, self.ca_cert, names)
        port = port or free_port()
        super().__init__(
            ["--port", "0", "--tls-port", str(port)]
            + ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)]
            + ["--tls-ca-cert-file", str(self.ca_cert), "--tls-auth-clients", "no", *extra],
            port=port,
        )

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.check_hostname = False  # readiness only: the certificate may name another host on purpose
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def start_tls_server(
    directory: Path, names: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost"), **kwargs: Any
) -> TLSRedisServer:
    """A started TLSRedisServer keeping its files in ``directory``; the test is
    skipped where redis-server was built without TLS."""
    directory.mkdir(exist_ok=True)
    server = TLSRedisServer(directory, names, **kwargs)
    try:
        server.start()
    except RuntimeError as exc:
        log = Path(server.dir, "server.log")
        if "exited" in str(exc) and "TLS" in (log.read_text() if log.exists() else ""):
            pytest.skip(f"this redis-server was built without TLS: {exc}")
        raise
    return server


# ------------------------------------------------------------------ a proxy


class FlakyProxy:
    """A TCP proxy on loopback between clients and Redis that can lose a reply or
    stall every connection (no Docker or toxiproxy here). Threads, not asyncio: it
    runs beside code that blocks."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.lose_reply_to: bytes | None = None  # the next request containing this: run it, lose its reply
        self.lost = 0
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def stall(self) -> None:
        """Hold every byte in both directions until resume()."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            self.sockets += [client, upstream]
            swallow = threading.Event()
            for args in ((client, upstream, swallow, True), (upstream, client, swallow, False)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, swallow: threading.Event, request: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                if request and self.lose_reply_to and self.lose_reply_to in data:
                    self.lose_reply_to = None
                    swallow.set()  # the request goes through; its reply will not
                elif not request and swallow.is_set():
                    self.lost += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
