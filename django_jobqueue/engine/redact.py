"""Credentials out of everything django-jobqueue shows: settings errors, logs, reprs.

A Redis URL may carry a password in its user-info part (``redis://user:secret@host``)
or in a ``password=`` query argument (redis-py reads both). Every message that
shows a URL, or a value that may hold one, goes through these functions first.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# A query argument whose name says it is a secret: password=, sentinel_password=, auth_token=, ...
_SECRET_ARGUMENT = re.compile(
    r"(?P<name>[^=&;?#\s'\"]*(?:pass|pwd|secret|token|auth)[^=&;?#\s'\"]*=)[^&;#\s'\"]*", re.I
)
# scheme://user-info@ in free text; the user-info runs to the last "@" before white space or a quote.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s'\"]*)@")


def _masked_userinfo(userinfo: str) -> str:
    """``user:***``; a user-info without a colon may be a password put where the
    user goes (``redis://secret@host``), so all of it is masked."""
    user, colon, _password = userinfo.partition(":")
    if colon and not any(c in user for c in "/?#"):
        return f"{user}:{MASK}"
    return MASK


def _mask_secret_arguments(text: str) -> str:
    return _SECRET_ARGUMENT.sub(lambda m: m.group("name") + MASK, text)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``: in the user-info part and in
    query arguments such as ``?password=``. Host, port, db and the user name stay.

    Everything before the last ``@`` counts as user-info, so a password holding an
    unescaped ``/``, ``#`` or ``@`` (which URL parsers split differently) is still
    masked whole. A value without ``scheme://`` (a URL missing its scheme) is
    treated the same way.
    """
    head, sep, rest = url.partition("://")
    if sep:
        head += sep
    else:
        head, rest = "", url
    userinfo, at, location = rest.rpartition("@")
    if at:
        rest = f"{_masked_userinfo(userinfo)}@{location}"
    return head + _mask_secret_arguments(rest)


def mask_credentials(text: str) -> str:
    """Free text (an error message, a repr) with the password of every URL in it
    masked, and the value of every secret-looking query argument."""
    masked = _URL_USERINFO.sub(lambda m: m.group("scheme") + _masked_userinfo(m.group("userinfo")) + "@", text)
    return _mask_secret_arguments(masked)


def shown(value: Any, *, url: bool = False) -> str:
    """A setting's value as an error message quotes it, without credentials.
    ``url``: the value is meant to be a URL (a string without ``scheme://``
    is then masked as one, everything before its last ``@``)."""
    if url and isinstance(value, str):
        return repr(mask_url(value))
    return mask_credentials(repr(value))


def url_location(url: str) -> str:
    """Where a Redis URL points, for logs: ``scheme://host:port/db`` or
    ``unix:///path``, with no user-info and no query at all."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK
    location = rest.rpartition("@")[2]
    return scheme + sep + re.split(r"[?#]", location, maxsplit=1)[0]
