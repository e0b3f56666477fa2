"""Log formats: JSON lines for collectors, and the start-up line's effective configuration."""

from __future__ import annotations

import json
import logging
import sys

from redbatch.config import SchedulerConfig, WorkerConfig
from redbatch.logconfig import MAX_LOGGED_IDS, JsonFormatter, request_ids, settings_line


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("redbatch.x", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_json_line_has_the_fields_and_is_one_line() -> None:
    line = JsonFormatter().format(record("queue %s: %d failed", "q", 2))
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == {"ts", "level", "logger", "msg"}
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "redbatch.x"
    assert parsed["msg"] == "queue q: 2 failed"
    assert parsed["ts"].endswith("+00:00") and "T" in parsed["ts"]


def test_json_line_carries_the_traceback_in_exc() -> None:
    line = JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["exc"].startswith("Traceback")
    assert "ValueError: boom" in parsed["exc"]


def test_describe_lists_every_setting_masks_the_password_and_option_values() -> None:
    config = WorkerConfig(
        queues=("q",), handler="m:f", handler_options=(("token", "s3cret"),),
        redis_url="redis://user:hunter2@host:6379/0", metrics_port=9100,
    )  # fmt: skip
    text = settings_line(config, skip=("queues",))
    assert "hunter2" not in text and "redis_url=redis://user:***@host:6379/0" in text
    assert "s3cret" not in text and "handler_options=token" in text
    assert "metrics_port=9100" in text and "log_format=text" in text
    assert "preferred_batch_sizes=-" in text
    assert "queues=" not in text
    assert "interval_s=1.0" in settings_line(SchedulerConfig())


def test_json_line_carries_the_context_and_the_calls_extra_fields() -> None:
    rec = record("batch done")
    rec.__dict__.update({"event": "batch_done", "queue": "q", "batch": {"id": 3, "size": 2}})
    parsed = json.loads(JsonFormatter({"worker": "w1", "queue": "ctx"}).format(rec))
    assert parsed["worker"] == "w1"
    assert parsed["event"] == "batch_done"
    assert parsed["queue"] == "q"  # the call's own field wins over the context's
    assert parsed["batch"] == {"id": 3, "size": 2}


def test_request_ids_are_bounded_and_counted() -> None:
    ids = [f"r{i}" for i in range(100)]
    fields = request_ids(ids)
    assert fields["request_ids"] == ids[:MAX_LOGGED_IDS] and fields["request_count"] == 100
    assert request_ids(["a"]) == {"request_ids": ["a"], "request_count": 1}
