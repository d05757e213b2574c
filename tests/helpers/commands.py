"""Management commands run in this process."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command


def command_output(*args: str) -> str:
    """What ``manage.py *args`` prints on stdout."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
