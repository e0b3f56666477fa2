"""What a worker tells its operators about its work: statistics in Redis, Prometheus metrics,
and, through ``BatchReport``, the batch's log lines and trace span.

``Worker._finish`` calls ``Telemetry.batch_done`` once per recorded batch (on the main loop,
after the batch's one write succeeded, so a batch that is re-run after a Redis error is not
counted twice). Statistics go into a ``StatsBuffer`` that the heartbeat thread flushes; the
Prometheus metrics live in a registry of this worker's own and are served only with
``--metrics-port``. Gauges that describe the running batch are read from ``Progress`` when
scraped, so nothing runs per scrape on the main loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from redbatch import exporter
from redbatch.protocol.fields import CANCELLED, DEAD, ERROR, EXPIRED, OK
from redbatch.tracing import BatchTracer
from redbatch.worker.batch_report import RETRY, BatchReport
from redbatch.worker.executor import Ran
from redbatch.worker.heartbeat import Progress
from redbatch.worker.reader import RawEntry
from redbatch.worker.stats_buffer import StatsBuffer

log = logging.getLogger(__name__)

# Outcome label values: the result statuses, plus "retry" for items re-queued with backoff.
OUTCOMES = (OK, ERROR, EXPIRED, CANCELLED, DEAD, RETRY)
# Items per batch: powers of two up to the largest batch a worker may run.
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(13))  # 1 .. 4096
# Seconds: from half a millisecond (a small batch on a GPU) to minutes (a deep backlog).
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
BUSY_WINDOW_S = 10.0


def outcome_of(ran: Ran, max_attempts: int) -> str:
    """The outcome the writer records for ``ran`` (Writer._finished: a retry past
    ``max_attempts`` ends dead)."""
    if ran.retry:
        return RETRY if ran.request.attempt < max_attempts else DEAD
    return ran.outcome.status


class BusyWindow:
    """Handler time / wall time over the last ``window_s`` seconds: how busy the accelerator
    is kept. Finished runs are recorded as intervals; the running one counts up to now."""

    def __init__(self, window_s: float = BUSY_WINDOW_S, now: float | None = None) -> None:
        self._window_s = window_s
        self._since = time.monotonic() if now is None else now
        self._runs: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()  # recorded by the main loop, read by the HTTP thread

    def record(self, start: float, end: float) -> None:
        with self._lock:
            self._runs.append((start, end))
            self._prune(end)

    def ratio(self, now: float, running_since: float | None = None) -> float:
        # Right after start-up the window is the time since start, not an idle past.
        span = min(self._window_s, now - self._since)
        if span <= 0:
            return 0.0
        low = now - span
        with self._lock:
            self._prune(now)
            busy = sum(max(0.0, min(end, now) - max(start, low)) for start, end in self._runs)
        if running_since is not None:
            busy += max(0.0, now - max(running_since, low))
        return min(1.0, busy / span)

    def _prune(self, now: float) -> None:
        while self._runs and self._runs[0][1] <= now - self._window_s:
            self._runs.popleft()


class InFlight(Collector):
    """``redbatch_items_in_flight{queue}``: the running batch's items, read when scraped."""

    def __init__(self, queues: Sequence[str], progress: Progress) -> None:
        self._queues = tuple(queues)
        self._progress = progress

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "redbatch_items_in_flight", "Items of the running batch", labels=["queue"]
        )
        p = self._progress
        running = p.batch_queue if p.batch_started is not None else None
        for queue in self._queues:
            family.add_metric([queue], p.batch_items if queue == running else 0)
        yield family


class WorkerMetrics:
    """The worker's Prometheus metrics, in a registry of their own."""

    def __init__(self, queues: Sequence[str], progress: Progress, busy: BusyWindow) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "redbatch_requests", "Requests finished, by outcome", ["queue", "outcome"], registry=r
        )
        self.batch_size = Histogram(
            "redbatch_batch_size", "Items per batch", ["queue"],
            buckets=BATCH_SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "redbatch_queue_wait_seconds", "Per request: enqueue to batch start", ["queue"],
            buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.handler = Histogram(
            "redbatch_handler_seconds", "Per batch: the handler's run time", ["queue"],
            buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.handler_busy = Counter(
            "redbatch_handler_busy_seconds", "Seconds the handler ran", ["queue"], registry=r
        )
        r.register(InFlight(queues, progress))
        exporter.build_info(r)
        ratio = Gauge(
            "redbatch_worker_busy_ratio",
            f"Handler time / wall time over the last {BUSY_WINDOW_S:g} s (accelerator use)",
            registry=r,
        )
        ratio.set_function(lambda: busy.ratio(time.monotonic(), progress.batch_started))
        # Every series exists from the start, at zero: rate() needs a first sample.
        for queue in queues:
            for outcome in OUTCOMES:
                self.requests.labels(queue, outcome)
            for metric in (self.batch_size, self.queue_wait, self.handler, self.handler_busy):
                metric.labels(queue)

    def observe(
        self, queue: str, outcomes: Sequence[str], waits_ms: Sequence[float], service_s: float
    ) -> None:
        counts: dict[str, int] = {}
        for status in outcomes:
            counts[status] = counts.get(status, 0) + 1
        for status, n in counts.items():
            self.requests.labels(queue, status).inc(n)
        queue_wait = self.queue_wait.labels(queue)
        for ms in waits_ms:
            queue_wait.observe(ms / 1000)
        self.batch_size.labels(queue).observe(len(outcomes))
        self.handler.labels(queue).observe(service_s)
        self.handler_busy.labels(queue).inc(service_s)


class Telemetry:
    """Statistics, metrics, batch log lines and batch spans of one worker."""

    def __init__(
        self,
        queues: Sequence[str],
        progress: Progress,
        *,
        max_attempts: int,
        metrics_port: int = 0,
        health: exporter.Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        worker: str = "",
        tracer: BatchTracer | None = None,
    ) -> None:
        self._progress = progress
        self._max_attempts = max_attempts
        self._clock = clock
        self._port = metrics_port
        self._health = health
        self.stats = StatsBuffer()
        self.busy = BusyWindow(now=clock())
        # Per-item histogram updates cost ~1 us each: only when someone can scrape them.
        self.metrics = WorkerMetrics(queues, progress, self.busy) if metrics_port else None
        self._endpoint: exporter.Endpoint | None = None
        self.report = BatchReport(worker, tracer)

    def serve(self) -> None:
        """Start the endpoint (``--metrics-port``); ConfigError if the port is taken."""
        if self.metrics is not None and self._endpoint is None:
            health = self._health or exporter.ALWAYS_WELL
            self._endpoint = exporter.serve(self._port, self.metrics.registry, health)

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def batch_done(
        self,
        queue: str,
        ran: Sequence[Ran],
        malformed: int,
        service_s: float,
        entries: Sequence[RawEntry] = (),
    ) -> None:
        """Count one recorded batch: ``ran`` from the handler thread, ``malformed`` entries
        dead-lettered without running, ``service_s`` the handler's time, ``entries`` as read
        (their trace context, if any, for the batch span)."""
        most = self._max_attempts
        outcomes = [outcome_of(r, most) if r.retry else r.outcome.status for r in ran]
        # Clocks of producer and worker hosts differ a little: a wait is never negative.
        waits_ms = [max(0, r.start - r.request.enq) for r in ran if r.request.enq]
        if ran or malformed:
            unrun = {DEAD: malformed} if malformed else None
            self.stats.add(queue, waits_ms, service_s * 1000, outcomes, unrun=unrun)
        if ran:
            self._record_busy(service_s)
        if self.metrics is not None:
            if ran:
                self.metrics.observe(queue, outcomes, waits_ms, service_s)
            if malformed:
                self.metrics.requests.labels(queue, DEAD).inc(malformed)
        self.report.done(
            queue, ran, outcomes, waits_ms=waits_ms, service_s=service_s, entries=entries
        )

    def _record_busy(self, service_s: float) -> None:
        # The handler thread runs one batch at a time, so this one ended before the next
        # began (the loop may already have launched it when it records this one).
        now = self._clock()
        running = self._progress.batch_started
        end = min(now, running) if running is not None else now
        self.busy.record(end - service_s, end)
