"""JSON log lines for log shippers: one object per record, one record a line.

``jobq_worker --log-format json`` and ``jobq_events --log-format json`` use
it; a project sends its own loggers through it from ``LOGGING``::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "django_jobqueue.logformat.JSONFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"django_jobqueue": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }

Each object has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and
``message``; then the fields of a job's line (worker/joblog.py FIELDS:
``job_id``, ``queue``, ``outcome``, ``next_action``, ...) that the record has;
then ``exc_info`` (the traceback, as text) and ``stack_info`` when present.
The output is ASCII: every control and non-ASCII character is a JSON escape,
so the lines are safe on a terminal too (terminal.py). A lone surrogate (what
``os.fsdecode`` makes of a file name that is not UTF-8), which strict JSON
parsers refuse as an escape, is written as the text ``\\udce9`` instead.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from .engine.errortext import safe_str
from .terminal import safe_json
from .worker.joblog import FIELDS

_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """``value`` with each surrogate as the text of its escape: ``\\udce9``."""
    if _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _other(value: object) -> str:
    # An attribute json cannot write: another library's record may carry one
    # under a name of FIELDS; its __str__ is that library's, and may raise.
    return _text(safe_str(value))


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring).

    Takes logging.Formatter's arguments, so that ``LOGGING`` may name it with
    ``"class"`` or ``"()"``; the format string, if given, is not used."""

    _second = -1
    _text = ""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self._utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _text(record.getMessage()),  # first: a job's line makes its fields here
        }
        attributes = record.__dict__
        for name in FIELDS:
            value = attributes.get(name)
            if value is not None:
                data[name] = _text(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = _text(record.exc_text)
        if record.stack_info:
            data["stack_info"] = _text(self.formatStack(record.stack_info))
        return safe_json(data, default=_other)

    def _utc_time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            # Made once a second: a busy worker writes thousands of lines in one.
            self._text, self._second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)), second
        return f"{self._text}.{int(record.msecs):03d}Z"
