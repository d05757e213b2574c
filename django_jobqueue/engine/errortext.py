"""Size caps on the error text and tracebacks that failed jobs leave in Redis.

Payloads and results have a size limit; error text needs one too. A handler
whose exception quotes a large input (a 900 KB field, say) would otherwise
write it into the job hash (``last_error``, ``last_traceback``, every entry of
the ``errors`` log), into each event, and into every page that shows them.

The engine (RedisJobQueue) caps every error text and traceback it is given
before its script call, so every caller is covered; the worker builds them
already capped. Plain Python, no Django: the engine uses it.

* Error text keeps its start (the exception's class and the beginning of its
  message): at most ``MAX_ERROR_CHARS`` characters.
* A traceback keeps its end (the last frames and the exception, where the
  failure is): at most ``MAX_TRACEBACK_CHARS`` characters. The worker first
  caps each part of it (one frame, the exception's line) like an error text,
  so a huge message cannot push every frame out.

What is cut is replaced by a marker that says how much: ``... [cut: 912345
more characters]``. Capping text that is already capped changes nothing.

An exception is user code down to its ``__str__``, which may raise (anything,
``SystemExit`` too): every text made of one goes through ``safe_str``.
"""

from __future__ import annotations

import traceback

MAX_ERROR_CHARS = 4096
MAX_TRACEBACK_CHARS = 16384
# Room left for the marker: its words and a count of up to 20 digits.
_MARKER_ROOM = 64


def cap_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping its start."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - _MARKER_ROOM)
    return f"{text[:keep]}... [cut: {len(text) - keep} more characters]"


def cap_traceback(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping its end, from a line start
    where one is near."""
    if len(text) <= limit:
        return text
    tail = text[len(text) - max(0, limit - _MARKER_ROOM) :]
    newline = tail.find("\n")
    if 0 <= newline < len(tail) // 2:
        tail = tail[newline + 1 :]
    return f"[cut: {len(text) - len(tail)} earlier characters] ...\n{tail}"


def safe_str(value: object) -> str:
    """``str(value)``, or ``<ClassName: str() failed>`` when that raises."""
    try:
        return str(value)
    except BaseException:  # noqa: BLE001 - whatever user code raises, the caller gets text
        return f"<{type(value).__name__}: str() failed>"


def failure_text(exc: BaseException) -> str:
    """The error text of a failure: ``ValueError: message``, capped."""
    message = safe_str(exc)
    return cap_error(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as it is stored: each part capped, then the whole."""
    try:
        # It shows a __str__ that raises as "<exception str() failed>"; the
        # exception's __notes__ or __cause__ are user objects all the same.
        parts = traceback.format_exception(type(exc), exc, exc.__traceback__)
    except BaseException:  # noqa: BLE001
        parts = [f"{type(exc).__name__}: {safe_str(exc)} (its traceback could not be formatted)\n"]
    return cap_traceback("".join(_cap_part(part) for part in parts))


def _cap_part(part: str) -> str:
    if len(part) <= MAX_ERROR_CHARS:
        return part
    # The marker goes before the part's own line end, so lines stay lines.
    ending = "\n" if part.endswith("\n") else ""
    return cap_error(part.removesuffix(ending)) + ending
