"""The scheduler process's loop: periodic duties, held as data, run over the queues that hold
work.

Each duty is (name, per-queue function, interval). The loop runs the duties that are due over
the queues ``Watch`` selects for the pass: those marked in ``rb:watch`` or met by the sweep of
``rb:queues`` that hold entries in flight, consumers or delayed retries (an idle queue costs
one probe per sweep; a queue added later is picked up by the sweep or by its worker's first
heartbeat, no restart). If the index cannot be used (an ACL from before it), a pass visits
every queue of ``rb:queues``, as schedulers did before. Then the loop waits on an Event until
the next duty is due, so ``stop()`` from a signal handler ends the wait at once. A duty that
fails on one queue logs one line and the others carry on; an unreachable Redis (after
redis-py's own retries) logs one line when the outage starts and one when it ends. With
``--metrics-port``, one more duty reads the depths of every queue probed for Prometheus
(``metrics``): busy queues each pass, idle ones as the sweep reaches them.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

from redbatch import exporter, liveness_files
from redbatch.config import SchedulerConfig
from redbatch.errors import ConfigError
from redbatch.logconfig import settings_line
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.scheduler.metrics import SchedulerMetrics
from redbatch.scheduler.probes import Beat, SchedulerHealth
from redbatch.scheduler.upkeep import Upkeep
from redbatch.scheduler.watch import Selection, Watch
from redbatch.transport.capabilities import detect
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import Client, check_reachable, connection_name, redacted

log = logging.getLogger(__name__)

# Commands retried by redis-py (backoff capped at 2 s) before a pass gives up and logs;
# small enough that a stop request is honoured within seconds during an outage.
_RETRIES = 5
# Consumer clean-up needs no hurry: a removable consumer has been idle for seconds already.
_CLEANUP_MIN_INTERVAL_S = 1.0
_ANNOUNCE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Duty:
    name: str
    run: Callable[[QueueKeys], object]
    interval_s: float
    # Run on every queue probed this pass, not only the busy ones (the gauges of idle
    # queues are refreshed as the sweep reaches them).
    probed_too: bool = False


def due_duties(duties: Sequence[Duty], next_run: Mapping[str, float], now: float) -> list[Duty]:
    return [d for d in duties if next_run.get(d.name, 0.0) <= now]


def wait_time(next_run: Mapping[str, float], now: float) -> float:
    """Seconds until the next duty is due (0 when one is due already)."""
    return max(0.0, min(next_run.values(), default=now) - now)


class Scheduler:
    """Runs the upkeep duties over the queues of ``config.namespace`` that hold work, until
    stopped."""

    def __init__(
        self,
        config: SchedulerConfig,
        client: Client | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._owns_client = client is None
        self._name = f"{socket.gethostname()}-{os.getpid()}"
        self._client_name = connection_name("scheduler", self._name)
        self._client = client or connect_any(
            config.redis_url,
            cluster=config.cluster,
            retries=_RETRIES,
            client_name=self._client_name,
        )
        self._stop = stop or threading.Event()
        self._clock = clock
        self._keyspace = KeySpace(config.namespace)
        self._bad_names: set[str] = set()
        self._watch = Watch(self._client, self._keyspace, config.interval_s)
        self._fallback_said = False
        self._unreachable = False
        self.beat = Beat()
        self._announced = -math.inf
        self.metrics = SchedulerMetrics(self._client) if config.metrics_port else None
        self._endpoint: exporter.Endpoint | None = None
        upkeep = Upkeep(self._client, config, tally=self.metrics)
        interval = config.interval_s
        self.duties: list[Duty] = [
            Duty("reap", upkeep.reap, interval),
            Duty("move_due", upkeep.move_due, interval),
            Duty(
                "remove_consumers", upkeep.remove_consumers, max(interval, _CLEANUP_MIN_INTERVAL_S)
            ),
        ]
        if self.metrics is not None:
            # Last in the pass: the gauges show the queues after this pass's moves.
            self.duties.append(Duty("metrics", self.metrics.refresh, interval, probed_too=True))

    def stop(self) -> None:
        """Ask the loop to return; safe from signal handlers and other threads."""
        self._stop.set()

    def run(self) -> None:
        check_reachable(
            self.config.redis_url,
            None if self._owns_client else self._client,
            client_name=self._client_name,
        )
        if self.metrics is not None:
            health = SchedulerHealth(self.beat, self.config.interval_s)
            self._endpoint = exporter.serve(self.config.metrics_port, self.metrics.registry, health)
        log.info(
            "scheduler on %s, %s, namespace %s (%s)",
            redacted(self.config.redis_url),
            detect(self._client).describe(),
            self.config.namespace,
            settings_line(self.config, skip=("redis_url", "namespace")),
            extra={"event": "scheduler_started"},
        )
        next_run = {d.name: 0.0 for d in self.duties}
        while not self._stop.is_set():
            now = self._clock()
            due = due_duties(self.duties, next_run, now)
            if due:
                self.run_pass(due)
                for duty in due:
                    next_run[duty.name] = now + duty.interval_s
            self._stop.wait(wait_time(next_run, self._clock()))
        liveness_files.remove(liveness_files.SCHEDULER, self._name)
        log.info("scheduler stopped", extra={"event": "scheduler_stopped"})
        if self._endpoint is not None:
            self._endpoint.close()
        if self._owns_client:
            self._client.close()

    def run_pass(self, duties: Sequence[Duty]) -> None:
        """Run ``duties`` once over the selected queues; never raises for Redis trouble."""
        started = self._clock()
        try:
            selection = self._select()
            for duty in duties:
                for keys in selection.probed if duty.probed_too else selection.busy:
                    if self._stop.is_set():
                        return
                    self._guarded(duty, keys)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py already retried with backoff; the next pass tries again. One line per
            # outage, not one per pass.
            if not self._unreachable:
                log.warning(
                    "Redis unavailable (%s); retrying every pass",
                    exc,
                    extra={"event": "redis_unavailable"},
                )
                self._unreachable = True
                self.beat.unreachable_since = started
            self.beat.passed = started
            return
        if self._unreachable:
            log.info("Redis reachable again", extra={"event": "redis_reachable"})
            self._unreachable = False
            self.beat.unreachable_since = None
        self.beat.passed = started
        self._announce(started)

    def _select(self) -> Selection:
        """This pass's queues from the index; every queue when the index cannot be used."""
        try:
            return self._watch.select()
        except redis.ResponseError as exc:  # e.g. NOPERM: an ACL written before rb:watch
            if not self._fallback_said:
                log.warning(
                    "cannot use %s (%s); visiting every queue",
                    self._keyspace.watch,
                    exc,
                    extra={"event": "watch_unavailable"},
                )
                self._fallback_said = True
            queues = self._queues()
            return Selection(queues, queues)

    def _announce(self, now: float) -> None:
        """Tell --check a pass reached Redis (at most once a second: a file write)."""
        if now - self._announced >= _ANNOUNCE_INTERVAL_S:
            liveness_files.write(liveness_files.SCHEDULER, self._name, self.config.namespace)
            self._announced = now

    def _guarded(self, duty: Duty, keys: QueueKeys) -> None:
        try:
            duty.run(keys)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the pass ends: the other queues would only wait on the same outage
        except Exception as exc:  # a duty's failure must not stop the others
            log.error(
                "%s on queue %s failed: %s: %s", duty.name, keys.name, type(exc).__name__, exc,
                extra={"event": "duty_failed", "queue": keys.name, "duty": duty.name},
            )  # fmt: skip
            log.debug(
                "%s on queue %s", duty.name, keys.name, exc_info=True,
                extra={"event": "duty_failed_traceback", "queue": keys.name, "duty": duty.name},
            )  # fmt: skip

    def _queues(self) -> list[QueueKeys]:
        queues = []
        for raw in sorted(self._client.smembers(self._keyspace.queues)):
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            try:
                queues.append(self._keyspace.queue(name))
            except ConfigError:
                if name not in self._bad_names:  # say it once, not every pass
                    self._bad_names.add(name)
                    log.warning(
                        "ignoring invalid queue name %r in %s", name, self._keyspace.queues,
                        extra={"event": "queue_name_invalid"},
                    )  # fmt: skip
        return queues
