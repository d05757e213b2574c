"""Count the Redis commands a phase costs, split by who sent them.

MONITOR streams every command the server runs, tagged with the client's
address, or with ``lua`` for commands a script ran. From that stream:

- client commands: what the clients sent. A MULTI ... EXEC block counts as one
  round trip (redis-py sends a transaction in one write); commands of other
  pipelines count one each, so this is an upper bound on round trips.
- script commands: what ran inside EVAL/EVALSHA.

MONITOR slows the server down, so the harness uses it only in a short phase
of its own, never while it times anything.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

_LINE = re.compile(rb'^\+?\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')


@dataclass
class CommandCounts:
    round_trips: int = 0
    client_commands: int = 0
    script_commands: int = 0
    by_command: Counter[str] = field(default_factory=Counter)  # client-sent, by name
    in_scripts: Counter[str] = field(default_factory=Counter)  # script-run, by name


def parse(lines: list[bytes], ignore_addrs: set[str]) -> CommandCounts:
    out = CommandCounts()
    in_multi: set[str] = set()
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        addr, name = m.group(1).decode(), m.group(2).decode().lower()
        if addr in ignore_addrs:
            continue
        if addr == "lua":
            out.script_commands += 1
            out.in_scripts[name] += 1
            continue
        out.client_commands += 1
        out.by_command[name] += 1
        if addr in in_multi:
            if name in ("exec", "discard"):
                in_multi.discard(addr)
            continue
        if name == "multi":
            in_multi.add(addr)
        out.round_trips += 1
    return out


class Monitor:
    """A MONITOR connection read by a thread until stop()."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        first = self._readline_blocking()
        if not first.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self.sock.settimeout(0.2)
        self._buf = b""
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-monitor", daemon=True)
        self._thread.start()

    def _readline_blocking(self) -> bytes:
        data = b""
        while not data.endswith(b"\r\n"):
            data += self.sock.recv(1)
        return data

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self._chunks.append(data)

    def stop(self, marker: bytes = b"", timeout: float = 10.0) -> list[bytes]:
        """Stop reading; return the lines received. With ``marker`` (an argument
        of a command the caller just sent), first read until that command shows
        up, so every command that ran before it is in the result."""
        deadline = time.monotonic() + timeout
        while marker and time.monotonic() < deadline:
            if marker in b"".join(self._chunks[-8:]):
                break
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return b"".join(self._chunks).split(b"\r\n")
