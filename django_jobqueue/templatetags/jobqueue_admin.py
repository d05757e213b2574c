"""Filters for the admin templates, and the bounded text they show. None
returns HTML: what they return is autoescaped like any other value.

Whatever Redis holds, showing it costs at most about its display limit: stored
JSON is indented by a walk over its text that stops at PRETTY_LIMIT characters
of output (never by decoding it whole and indenting all of it, whose cost grows
with the payload's depth times its size), decoded values are walked with a
stack of iterators (no recursion, so no depth raises RecursionError), and every
other text is cut before it reaches a template.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

from django import template

register = template.Library()

# Payloads can be up to MAX_PAYLOAD_BYTES (1 MiB by default); a page shows this much
# of a payload, a result or a traceback.
PRETTY_LIMIT = 100_000
# A page shows this much of a short text: an error, a name, a field of a worker record.
SHORT_LIMIT = 2_000

# One JSON token and the whitespace before it; a string token's escapes are
# checked here, so a match is a whole valid token.
_STRING = r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
# NaN and Infinity are not JSON, but json.loads reads them: shown as they are.
_LITERAL = r"true|false|null|NaN|-?Infinity"
_TOKEN = re.compile(
    rf"[ \t\n\r]*(?:(?P<string>{_STRING})|(?P<literal>{_LITERAL})|(?P<number>{_NUMBER})|(?P<punct>[][{{}}:,]))"
)
_TRAILING_SPACE = re.compile(r"[ \t\n\r]*")
INDENT = "  "


class NotJSON(ValueError):
    """The text is not JSON (as far as it was read)."""


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a note saying how long it is."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… (cut at {limit:,} of {len(text):,} characters)"


def _pretty_chunks(text: str) -> Iterator[str]:
    """Stored JSON text indented like ``json.dumps(value, indent=2)``, chunk
    by chunk, read token by token with a stack of open containers: the
    consumer stops reading where it stops showing. Raises NotJSON at the first
    token that breaks the grammar."""
    stack: list[str] = []  # the open containers, "[" or "{"
    expect = "value"  # value, first value, key, first key, colon, or "more" (a comma or a close)
    pos = 0
    while (match := _TOKEN.match(text, pos)) is not None:
        pos = match.end()
        kind = match.lastgroup or ""
        piece = match.group(kind)
        if piece in ("]", "}") and kind == "punct":
            opener = "[" if piece == "]" else "{"
            first = "first value" if opener == "[" else "first key"
            if not stack or stack[-1] != opener or expect not in ("more", first):
                raise NotJSON(f"unexpected {piece!r} at {match.start(kind)}")
            stack.pop()
            yield piece if expect == first else "\n" + INDENT * len(stack) + piece
            expect = "more"
        elif expect in ("value", "first value"):
            if kind == "punct" and piece not in "[{":
                raise NotJSON(f"a value expected at {match.start(kind)}")
            lead = "\n" + INDENT * len(stack) if expect == "first value" else ""
            yield lead + piece
            if piece in ("[", "{") and kind == "punct":
                stack.append(piece)
                expect = "first value" if piece == "[" else "first key"
            else:
                expect = "more"
        elif expect in ("key", "first key"):
            if kind != "string":
                raise NotJSON(f"a key expected at {match.start(kind)}")
            yield ("\n" + INDENT * len(stack) if expect == "first key" else "") + piece
            expect = "colon"
        elif expect == "colon":
            if piece != ":":
                raise NotJSON(f"':' expected at {match.start(kind)}")
            yield ": "
            expect = "value"
        else:  # more
            if piece != "," or not stack:
                raise NotJSON(f"',' or the end expected at {match.start(kind)}")
            yield ",\n" + INDENT * len(stack)
            expect = "value" if stack[-1] == "[" else "key"
    trailing = _TRAILING_SPACE.match(text, pos)
    if stack or expect != "more" or trailing is None or trailing.end() != len(text):
        raise NotJSON(f"the text ends at {pos} without a whole JSON value")


def pretty_json_text(text: str, limit: int = PRETTY_LIMIT) -> str:
    """JSON text indented for reading, at most ``limit`` characters (and a note
    when cut); text that is not JSON as it is, cut the same way. The text is
    read only as far as it is shown: a value cut short is not checked past the
    cut."""
    shown: list[str] = []
    size = 0
    try:
        for chunk in _pretty_chunks(text):
            if size + len(chunk) > limit:
                shown.append(chunk[: limit - size])
                return "".join(shown) + f"\n… (cut at {limit:,} characters; the stored JSON is {len(text):,})"
            shown.append(chunk)
            size += len(chunk)
    except NotJSON:
        return cut(text, limit)
    return "".join(shown)


def _compact_chunks(value: Any) -> Iterator[str]:
    """A decoded JSON value as compact JSON, chunk by chunk. The containers
    being walked are a stack of iterators, so depth costs no recursion."""
    stack: list[Iterator[tuple[bool, Any]]] = [iter([(False, value)])]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        is_text, item = step
        if is_text:
            yield item
        elif isinstance(item, dict):
            stack.append(_members(item))
        elif isinstance(item, list | tuple):
            stack.append(_elements(item))
        else:
            yield _scalar(item)


def _elements(items: list[Any] | tuple[Any, ...]) -> Iterator[tuple[bool, Any]]:
    yield True, "["
    for n, item in enumerate(items):
        if n:
            yield True, ","
        yield False, item
    yield True, "]"


def _members(mapping: dict[Any, Any]) -> Iterator[tuple[bool, Any]]:
    yield True, "{"
    for n, (key, item) in enumerate(mapping.items()):
        yield True, ("," if n else "") + _scalar(str(key)) + ":"
        yield False, item
    yield True, "}"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        # Cut before encoding: a long string costs what is shown.
        return json.dumps(value[: SHORT_LIMIT + 1], ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        try:
            return json.dumps(value)
        except ValueError:  # an int too long to write out
            return "(a number too long to show)"
    return repr(value)[:SHORT_LIMIT]


def json_preview(value: Any, limit: int = SHORT_LIMIT) -> str:
    """A decoded JSON value as compact JSON text, at most ``limit`` characters
    (and a note when cut), whatever its depth or size."""
    shown: list[str] = []
    size = 0
    for chunk in _compact_chunks(value):
        if size + len(chunk) > limit:
            shown.append(chunk[: limit - size])
            return "".join(shown) + " … (cut)"
        shown.append(chunk)
        size += len(chunk)
    return "".join(shown)


@register.filter
def ms_to_datetime(value: Any) -> dt.datetime | None:
    """Milliseconds since the epoch (a job hash field) -> an aware datetime,
    shown in the current time zone by the ``date`` filter."""
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@register.filter
def duration_ms(value: Any) -> str:
    """A length of time in ms, the way a person says it: 850 ms, 4.2 s, 3 min, 5 h."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return ""
    if ms != ms or ms in (float("inf"), float("-inf")):
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


@register.filter
def pretty_json(value: Any) -> str:
    """Stored JSON text, indented for reading; text that is not JSON as it is;
    either way at most PRETTY_LIMIT characters and a note."""
    if value is None:
        return ""
    return pretty_json_text(str(value), PRETTY_LIMIT)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """mapping[key] in a template (None when absent)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
