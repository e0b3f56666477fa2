"""Pure liveness rules of the worker: when the watchdog ends the process, retry backoff."""

from __future__ import annotations

from redbatch.worker.heartbeat import Progress, overdue
from redbatch.worker.writer import MAX_RETRY_DELAY_S, retry_due_ms


def test_idle_worker_is_never_overdue() -> None:
    assert overdue(Progress(), now=1e9, batch_timeout_s=1, drain_timeout_s=1) == ""


def test_batch_within_batch_timeout_is_fine_however_long() -> None:
    progress = Progress(batch_started=100.0)
    assert overdue(progress, now=100.0 + 299.9, batch_timeout_s=300, drain_timeout_s=30) == ""


def test_batch_past_batch_timeout() -> None:
    progress = Progress(batch_started=100.0)
    why = overdue(progress, now=401.0, batch_timeout_s=300, drain_timeout_s=30)
    assert "batch_timeout" in why


def test_drain_timeout_counts_from_the_stop_request_and_needs_a_running_batch() -> None:
    running = Progress(batch_started=100.0, stop_requested=110.0)
    assert overdue(running, now=139.0, batch_timeout_s=300, drain_timeout_s=30) == ""
    assert "drain_timeout" in overdue(running, now=141.0, batch_timeout_s=300, drain_timeout_s=30)
    idle = Progress(stop_requested=110.0)
    assert overdue(idle, now=1e9, batch_timeout_s=300, drain_timeout_s=30) == ""


def test_retry_delay_doubles_per_attempt_and_is_capped() -> None:
    assert retry_due_ms(1, None, 1.0, now=0) == 1000
    assert retry_due_ms(2, None, 1.0, now=0) == 2000
    assert retry_due_ms(3, 0.5, 1.0, now=10) == 10 + 2000
    assert retry_due_ms(40, None, 1.0, now=0) == MAX_RETRY_DELAY_S * 1000
    assert retry_due_ms(1, 0.0, 1.0, now=5) == 6  # never "now": at least 1 ms later
