"""A worker's answers to Kubernetes probes (``/healthz``, ``/readyz`` on ``--metrics-port``),
decided from what its loops last recorded in ``Progress``: pure functions of the progress and
the time, tested without threads or Redis.

Live: the heartbeat thread renews (Redis answered within ``unreachable_s``), the main loop
turns while no batch runs, and no batch has overrun ``batch_timeout`` (nor ``drain_timeout``
once stopping). A restart would not mend Redis, but it does mend a wedged connection or loop,
and the bound is long enough that a Redis failover does not restart every worker.
Ready: warm-up done and serving (not starting, not draining), and the last heartbeat renewal
is younger than the heartbeat's TTL (connected).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from redbatch.config import WorkerConfig
from redbatch.worker.heartbeat import Progress, overdue

# Redis may be unreachable this many heartbeat TTLs before the worker calls itself unwell.
UNREACHABLE_TTLS = 6
SERVING = "serving"


@dataclass(frozen=True, slots=True)
class Bounds:
    batch_timeout_s: float
    drain_timeout_s: float
    heartbeat_ttl_s: float
    block_s: float  # the main loop's idle read blocks this long

    @classmethod
    def of(cls, config: WorkerConfig) -> Bounds:
        return cls(
            config.batch_timeout_s, config.drain_timeout_s, config.heartbeat_ttl_s,
            config.block_ms / 1000,
        )  # fmt: skip

    @property
    def unreachable_s(self) -> float:
        return UNREACHABLE_TTLS * self.heartbeat_ttl_s


def liveness(progress: Progress, now: float, bounds: Bounds) -> str:
    """Why the worker should be restarted, or ""."""
    why = overdue(progress, now, bounds.batch_timeout_s, bounds.drain_timeout_s)
    if why:
        return why
    if progress.state == "starting":
        return ""  # loading a model may take minutes: a startupProbe covers that phase
    if progress.renewed is not None and now - progress.renewed > bounds.unreachable_s:
        return (
            f"heartbeat not renewed for {now - progress.renewed:.0f} s "
            f"(over {bounds.unreachable_s:g} s): Redis unreachable"
        )
    idle = progress.batch_started is None
    if idle and progress.turned is not None:
        stalled = now - progress.turned
        if stalled > bounds.unreachable_s + bounds.block_s:
            return f"the main loop has not turned for {stalled:.0f} s"
    return ""


def readiness(progress: Progress, now: float, bounds: Bounds) -> str:
    """Why the worker should get no traffic now, or ""."""
    if progress.state != SERVING:
        if progress.state == "starting":
            return "starting: loading the handler and warming it up"
        return f"{progress.state}: not taking work"
    if progress.renewed is None or now - progress.renewed > bounds.heartbeat_ttl_s:
        return "not connected: the heartbeat was not renewed within its TTL (Redis unreachable)"
    return ""


class WorkerHealth:
    """``exporter.Health`` of one worker."""

    def __init__(
        self, progress: Progress, bounds: Bounds, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._progress = progress
        self._bounds = bounds
        self._clock = clock

    def live(self) -> str:
        return liveness(self._progress, self._clock(), self._bounds)

    def ready(self) -> str:
        return readiness(self._progress, self._clock(), self._bounds)
