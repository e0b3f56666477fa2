"""A scheduler's answers to Kubernetes probes (``/healthz``, ``/readyz``), decided from what
its loop last recorded (``Beat``), as pure functions tested without threads or Redis.

Live: the loop turns (its passes start on time) and Redis has not been unreachable for more
than ``UNREACHABLE_PASSES`` intervals. Ready: a first pass has run and Redis answered the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Passes a scheduler may spend unable to reach Redis before it calls itself unwell: 30 s at
# the default interval, long enough for a Redis failover.
UNREACHABLE_PASSES = 30


@dataclass
class Beat:
    """Written by the scheduler loop, read by the HTTP thread (plain attributes)."""

    passed: float | None = None  # monotonic; the last pass's start
    unreachable_since: float | None = None  # monotonic; None while Redis answers


def liveness(beat: Beat, now: float, interval_s: float) -> str:
    bound = UNREACHABLE_PASSES * interval_s
    if beat.unreachable_since is not None and now - beat.unreachable_since > bound:
        return f"Redis unreachable for {now - beat.unreachable_since:.0f} s (over {bound:g} s)"
    # A pass during an outage waits on redis-py's retries: the same bound plus one interval.
    if beat.passed is not None and now - beat.passed > bound + interval_s:
        return f"the scheduler loop has not run a pass for {now - beat.passed:.0f} s"
    return ""


def readiness(beat: Beat) -> str:
    if beat.passed is None:
        return "starting: no pass has run yet"
    if beat.unreachable_since is not None:
        return "not connected: Redis did not answer the last pass"
    return ""


class SchedulerHealth:
    """``exporter.Health`` of one scheduler."""

    def __init__(
        self, beat: Beat, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._beat = beat
        self._interval_s = interval_s
        self._clock = clock

    def live(self) -> str:
        return liveness(self._beat, self._clock(), self._interval_s)

    def ready(self) -> str:
        return readiness(self._beat)
