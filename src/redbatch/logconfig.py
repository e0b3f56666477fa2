"""Process-wide logging set-up for the CLI: one line per event, to stderr.

``text`` is for people; ``json`` is one object per line for log collectors (so a multi-line
traceback never splits an event across records): ``ts``, ``level``, ``logger``, ``msg``,
``exc`` when a traceback is attached, the process's context (``worker``), and the fields
each log call passes in ``extra=``: ``event`` (a stable name per line, listed in
docs/observability.md), ``queue``, ``batch``, ``request_ids``, ``trace_id``... The JSON is
python-json-logger's; the field names are ours and stable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from redbatch.transport.connection import redacted

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A record's standard attributes under the names our JSON lines have always used.
_RENAMED = {
    "levelname": "level",
    "name": "logger",
    "message": "msg",
    "exc_info": "exc",
    "stack_info": "stack",
}
# A log line names at most this many request ids (``request_count`` says how many there were):
# a batch of 4096 must not make a 100 KiB line.
MAX_LOGGED_IDS = 16


class JsonFormatter(_JsonFormatter):
    """One JSON object per record, on one line. ``context``: fields every record carries
    (a record's own ``extra=`` fields of the same name win)."""

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields=_RENAMED,
            static_fields=dict(context or {}),
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # UTC with milliseconds, first: sortable as text and unambiguous across hosts.
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)


def request_ids(ids: Sequence[str]) -> dict[str, Any]:
    """``request_ids`` (the first MAX_LOGGED_IDS) and ``request_count``, for ``extra=``."""
    return {"request_ids": list(ids[:MAX_LOGGED_IDS]), "request_count": len(ids)}


def formatter(
    log_format: str = "text", context: Mapping[str, Any] | None = None
) -> logging.Formatter:
    return JsonFormatter(context) if log_format == "json" else logging.Formatter(_FORMAT)


def setup(
    level: str = "INFO", log_format: str = "text", context: Mapping[str, Any] | None = None
) -> None:
    """Log to stderr; ``context`` (e.g. ``{"worker": name}``) goes into every JSON record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def settings_line(config: Any, skip: Collection[str] = ()) -> str:
    """Every setting of a config dataclass as ``name=value`` (for the start-up line, so a log
    shows what a process really ran with). The Redis password is masked and handler options
    show their names only: their values may be credentials."""
    parts = []
    for f in fields(config):
        if f.name in skip:
            continue
        value = getattr(config, f.name)
        if f.name == "redis_url":
            value = redacted(value)
        elif f.name == "handler_options":
            value = ",".join(name for name, _ in value)
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts.append(f"{f.name}={value if value != '' else '-'}")
    return " ".join(parts)
