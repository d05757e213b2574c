"""The Redis client of asyncio code (``aenqueue``): one per event loop.

A ``redis.asyncio`` connection belongs to the loop that opened it, so one
shared client cannot serve two loops: an ASGI server may run several, and a
test suite makes one per test. Each running loop gets a client of its own,
built from the settings the shared synchronous client uses (connection.py),
kept as long as the loop lives (a weak reference to the loop) and dropped
when the settings change.

The client's connections are closed when the loop shuts down: an async
generator started on the loop holds it, and ``loop.shutdown_asyncgens()``
(which ``asyncio.run``, and the ASGI servers built on it, call before
closing the loop) finalizes it, closing the client. Without that, a closed
loop would leave its connections open until the garbage collector found them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import SETTINGS_READ, get_settings
from .connection import build_client

_lock = threading.Lock()
# loop -> (its client, the started async generator that closes it)
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]] = (
    weakref.WeakKeyDictionary()
)


async def get_async_client() -> Any:
    """The client of the running event loop (RuntimeError outside one)."""
    loop = asyncio.get_running_loop()
    held = _clients.get(loop)
    if held is None:
        _forget_closed_loops()
        client = build_client(get_settings(), for_asyncio=True)
        closer = _close_at_shutdown(loop, client)
        await closer.__anext__()  # started here: the loop's shutdown_asyncgens() finalizes it
        with _lock:
            held = _clients.setdefault(loop, (client, closer))
        if held[0] is not client:  # another task of this loop made one meanwhile
            await closer.aclose()
    return held[0]


def _forget_closed_loops() -> None:
    """Drop the clients of loops closed without finalizing their async
    generators (loop.close() without shutdown_asyncgens()): their entries
    refer to their loops, so the weak keys alone would never let them go."""
    with _lock:
        for loop in [loop for loop in _clients if loop.is_closed()]:
            del _clients[loop]


async def _close_at_shutdown(loop: asyncio.AbstractEventLoop, client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _lock:
            if _clients.get(loop, (None,))[0] is client:
                del _clients[loop]
        await client.aclose()
        # A Sentinel-managed primary's client: the connections to the sentinels too.
        manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS_READ:
        reset()


def reset() -> None:
    """Forget every loop's client (the settings changed). Their connections
    close with their loops; closing them here would need each loop."""
    with _lock:
        _clients.clear()
