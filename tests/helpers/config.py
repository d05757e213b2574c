"""JOBQUEUE validation, as the system checks see it."""

from __future__ import annotations

from typing import Any

from django_jobqueue.conf import validate


def problems(value: Any) -> list[tuple[str, str]]:
    """The (setting path, message) errors ``validate`` finds in ``value``."""
    _settings, errors = validate(value)
    return errors
