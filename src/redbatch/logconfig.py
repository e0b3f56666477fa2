"""Process-wide logging set-up for the CLI: one line per event, to stderr.

``text`` is for people; ``json`` is one object per line (``ts``, ``level``, ``logger``,
``msg``, and ``exc`` when a traceback is attached) for log collectors, so a multi-line
traceback never splits an event across records.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Collection
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from redbatch.connection import redacted

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes the newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            # UTC with milliseconds: sortable as text and unambiguous across hosts.
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: str = "text") -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(_FORMAT)


def setup(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
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
