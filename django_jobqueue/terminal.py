"""Stored text made safe to print on an operator's terminal.

Job names, ids, payloads, error text, worker ids: anything read back from Redis
may hold what a handler's exception, a webhook body or a hand-written key put
there, escape sequences included. Printed as is, ``ESC [ 2 J`` clears the
operator's screen, an OSC sequence retitles the window, ``\\r`` and backspaces
overwrite what a line said, C1 controls (U+0080 to U+009F) act as escapes on
some terminals, and bidi overrides (U+202E, ...) show text in another order
than it is. Every management command passes stored text through
:func:`safe_text` (or :func:`safe_json`) before it prints it.

Such characters are made visible, not dropped: ``\\x1b``, ``\\u202e``, ``\\r``,
so the operator sees that the text held them. Newlines are kept only where a
command prints multi-line text on purpose (a traceback); elsewhere a stored
newline could fake a line of the command's own output, so it shows as ``\\n``.
Plain Python, no Django.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls and DEL, C1 controls, bidi embeddings, overrides, isolates and
# marks, line and paragraph separators, and lone surrogates (which no terminal
# encoding can write).
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_LINE = re.compile(f"[\t\n{_CONTROLS}]")
_UNSAFE_BLOCK = re.compile(f"[{_CONTROLS}]")  # tabs and newlines kept
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: Any, *, multiline: bool = False) -> str:
    """``value`` as text with every control character shown as an escape.

    ``multiline``: keep newlines and tabs (for text printed as a block, such as
    a traceback); ``\\r`` and every other control are escaped all the same."""
    text = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE_BLOCK if multiline else _UNSAFE_LINE
    # Most text has nothing to escape: one search, no copy.
    return pattern.sub(_escape, text) if pattern.search(text) else text


def safe_json(data: Any, **options: Any) -> str:
    """``json.dumps(data)`` fit for a terminal: every non-ASCII character and
    control is a JSON escape (DEL too, which json leaves as is)."""
    return json.dumps(data, ensure_ascii=True, **options).replace("\x7f", "\\u007f")
