"""The scheduler's Prometheus metrics: queue depths read each pass, and counters of what the
scheduler itself did (as ``Upkeep`` tells it, through the ``Tally`` interface).

Gauges are per queue (and lane where a queue has one per priority). Every scheduler exports
the same gauges (take the max across schedulers); its counters count only its own moves (sum
them).
"""

from __future__ import annotations

from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge

from redbatch.connection import Client
from redbatch.protocol.keys import GROUP, PRIORITIES, QueueKeys
from redbatch.scheduler.upkeep import DEAD_WORKER, DUE_RETRY, HUNG_WORKER

REASONS = (DEAD_WORKER, HUNG_WORKER, DUE_RETRY)
ALIVE, DEAD = "alive", "dead"
# Commands per lane in the refresh pipeline, in this order: XLEN, XPENDING, XINFO CONSUMERS.
_PER_LANE = 3


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _or_empty(reply: Any, empty: Any) -> Any:
    """A lane whose stream or group does not exist (yet) is empty; other errors raise."""
    if isinstance(reply, redis.ResponseError):
        message = str(reply)
        if message.startswith("NOGROUP") or "no such key" in message.lower():
            return empty
    if isinstance(reply, Exception):
        raise reply
    return reply


class SchedulerMetrics:
    """Metrics of one scheduler, in a registry of their own; also the upkeep's ``Tally``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._seen: set[str] = set()
        self.registry = CollectorRegistry()
        r = self.registry
        self.waiting = Gauge(
            "redbatch_queue_waiting", "Requests in the stream not yet delivered to a worker",
            ["queue", "lane"], registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "redbatch_queue_pending", "Requests delivered to a worker and not finished",
            ["queue", "lane"], registry=r,
        )  # fmt: skip
        self.delayed = Gauge(
            "redbatch_queue_delayed", "Retries waiting for their time", ["queue"], registry=r
        )
        self.dead_letters = Gauge(
            "redbatch_dead_letters", "Entries in the dead-letter stream", ["queue"], registry=r
        )
        self.consumers = Gauge(
            "redbatch_consumers", "Consumers in the queue's group, by whether their worker's "
            "heartbeat exists", ["queue", "state"], registry=r,
        )  # fmt: skip
        self.requeued_total = Counter(
            "redbatch_requeued", "Entries this scheduler put back into a stream, by reason",
            ["queue", "reason"], registry=r,
        )  # fmt: skip
        self.dead_lettered_total = Counter(
            "redbatch_dead_lettered", "Requests this scheduler dead-lettered", ["queue"], registry=r
        )

    # -- Tally: what the upkeep did ---------------------------------------------------------

    def requeued(self, queue: str, reason: str, count: int) -> None:
        if count:
            self.requeued_total.labels(queue, reason).inc(count)

    def dead_lettered(self, queue: str, count: int) -> None:
        if count:
            self.dead_lettered_total.labels(queue).inc(count)

    # -- gauges, read once per pass -----------------------------------------------------------

    def refresh(self, keys: QueueKeys) -> None:
        """Read the queue's depths (two pipelined round trips), then set its gauges together,
        so a scrape meanwhile sees the last pass's values, not half of each."""
        q = keys.name
        self._first_sight(q)
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            stream = keys.stream_for(priority)
            pipe.xlen(stream)
            pipe.xpending(stream, GROUP)
            pipe.xinfo_consumers(stream, GROUP)
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dead)
        replies = pipe.execute(raise_on_error=False)
        lanes: dict[str, tuple[int, int]] = {}  # lane -> (waiting, pending)
        names: set[str] = set()
        for i, priority in enumerate(PRIORITIES):
            length, summary, infos = replies[i * _PER_LANE : (i + 1) * _PER_LANE]
            pending = int(_or_empty(summary, {}).get("pending", 0))
            # Every entry in a lane is waiting or pending: workers delete what they finish.
            lanes[priority] = (max(0, int(_or_empty(length, 0)) - pending), pending)
            names.update(_text(info["name"]) for info in _or_empty(infos, []))
        delayed, dead = (int(_or_empty(r, 0)) for r in replies[len(PRIORITIES) * _PER_LANE :])
        alive = self._alive(keys, sorted(names))
        for priority, (waiting, pending) in lanes.items():
            self.waiting.labels(q, priority).set(waiting)
            self.pending.labels(q, priority).set(pending)
        self.delayed.labels(q).set(delayed)
        self.dead_letters.labels(q).set(dead)
        self.consumers.labels(q, ALIVE).set(alive)
        self.consumers.labels(q, DEAD).set(len(names) - alive)

    def _alive(self, keys: QueueKeys, names: list[str]) -> int:
        if not names:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.exists(keys.worker(name))
        return sum(1 for found in pipe.execute() if found)

    def _first_sight(self, queue: str) -> None:
        # Counters exist at zero from the first pass on: rate() needs a first sample.
        if queue in self._seen:
            return
        self._seen.add(queue)
        for reason in REASONS:
            self.requeued_total.labels(queue, reason)
        self.dead_lettered_total.labels(queue)
