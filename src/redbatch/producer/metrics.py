"""Optional Prometheus metrics of a producer, registered on the app's registry (or the
default one) so the app's own ``/metrics`` exposes them. Imported only when a producer is
made with ``metrics=``: ``import redbatch`` never imports prometheus_client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redbatch.errors import ConfigError
from redbatch.protocol.fields import Outcome

_DEFAULT: Any
try:
    from prometheus_client import REGISTRY as _DEFAULT
    from prometheus_client import Counter, Histogram
except ImportError:  # pragma: no cover - installed wherever the worker runs
    _DEFAULT = None

# Seconds: from a web request's few milliseconds to a long batch job's minute.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# One set of collectors per registry: several producers of one app share them (a second
# registration of the same names would raise).
_BY_REGISTRY: dict[int, tuple[Any, ...]] = {}


def _collectors(registry: Any) -> tuple[Any, ...]:
    found = _BY_REGISTRY.get(id(registry))
    if found is None:
        found = _BY_REGISTRY[id(registry)] = (
            Histogram(
                "redbatch_producer_submit_seconds",
                "Time to admit a submit or one submit_many/map call into Redis.",
                buckets=_BUCKETS,
                registry=registry,
            ),
            Histogram(
                "redbatch_producer_latency_seconds",
                "Time from submit to a request's outcome, by outcome.",
                ["outcome"],
                buckets=_BUCKETS,
                registry=registry,
            ),
            Counter(
                "redbatch_producer_timeouts",
                "Waits (result, call, map, an admission) that ended in ResultTimeout.",
                registry=registry,
            ),
            Counter(
                "redbatch_producer_queue_full",
                "Admissions refused with QueueFull.",
                registry=registry,
            ),
        )
    return found


class ProducerMetrics:
    """The producer's collectors on ``registry`` (None: prometheus_client's default)."""

    def __init__(self, registry: Any) -> None:
        if _DEFAULT is None:
            raise ConfigError(
                "metrics= needs prometheus_client: pip install 'redbatch[metrics]' "
                "(or prometheus-client)"
            )
        self._submit, self._latency, self._timeouts, self._full = _collectors(
            _DEFAULT if registry is None else registry
        )

    def submitted(self, seconds: float) -> None:
        self._submit.observe(seconds)

    def started(self, handles: Sequence[Any]) -> None:
        now = time.monotonic()
        for handle in handles:
            handle.submitted_at = now

    def ended(self, ready: Sequence[tuple[Any, Outcome]]) -> None:
        now = time.monotonic()
        for handle, outcome in ready:
            self._latency.labels(outcome.status).observe(now - handle.submitted_at)

    def timed_out(self) -> None:
        self._timeouts.inc()

    def queue_full(self) -> None:
        self._full.inc()
