"""Loading and running the Lua scripts in ``lua/``.

Each script is read once, its ``--@include name`` lines replaced by the shared
``lua/name.lua`` snippets, and its SHA1 computed locally. Calls go out as
EVALSHA; a NOSCRIPT reply (after SCRIPT FLUSH, or a Redis restarted without
its script cache) loads the script and retries once, so callers never see it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)


def _read(name: str) -> str:
    return resources.files("django_jobqueue").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Script:
    """One Lua script, ready to run on any client or pipeline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _INCLUDE.sub(lambda m: _read(m.group(1)), _read(name))
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()  # noqa: S324 - Redis's script id

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue_in(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add a call to a pipeline; see :func:`run_pipeline` for NOSCRIPT."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


@cache
def get(name: str) -> Script:
    return Script(name)


def run_pipeline(client: Any, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run script calls in one pipeline (one round trip when the scripts are cached).

    The pipeline is not a transaction: each call is atomic on its own. Calls
    refused with NOSCRIPT did nothing, so they alone are sent again once the
    scripts are loaded; calls that ran are never repeated. Other errors are
    raised after every call has had its turn.
    """
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue_in(pipe, keys, args)
    results = pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            client.script_load(script.source)
        retry = client.pipeline(transaction=False)
        for i in missing:
            calls[i][0].queue_in(retry, calls[i][1], calls[i][2])
        for i, r in zip(missing, retry.execute(raise_on_error=False), strict=True):
            results[i] = r
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results
