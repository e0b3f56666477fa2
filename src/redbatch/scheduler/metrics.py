"""The scheduler's Prometheus metrics: queue depths read each pass, and counters of what the
scheduler itself did (as ``Upkeep`` tells it, through the ``Tally`` interface).

Gauges are per queue (and lane where a queue has one per priority). Every scheduler exports
the same gauges (take the max across schedulers); its counters count only its own moves (sum
them). ``redbatch_queue_backlog`` and ``redbatch_queue_oldest_waiting_seconds`` are per logical
queue, over every lane and shard: the signal to autoscale workers on (deploy/).
"""

from __future__ import annotations

from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge

from redbatch import exporter
from redbatch.protocol.fields import STARTED_DELIVERIES
from redbatch.protocol.keys import GROUP, PRIORITIES, QueueKeys, logical_name
from redbatch.scheduler.upkeep import DEAD_WORKER, DUE_RETRY, HUNG_WORKER
from redbatch.transport.connection import Client

REASONS = (DEAD_WORKER, HUNG_WORKER, DUE_RETRY)
ALIVE, DEAD = "alive", "dead"
# Commands per lane in the refresh pipeline, in this order: XLEN, XPENDING, XINFO CONSUMERS,
# XINFO GROUPS, XPENDING (entries).
_PER_LANE = 5
# Pending entries examined per lane for "read ahead but not started": a PEL holds about two
# batches per worker, so this bounds a pathological one, not the usual.
_PENDING_SCAN = 10_000


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


def _or_empty_list(reply: Any) -> Any:
    return _or_empty(reply, [])


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
        self.backlog = Gauge(
            "redbatch_queue_backlog", "Requests waiting, over every lane and shard: not yet "
            "delivered, or read ahead by a worker but not started", ["queue"], registry=r,
        )  # fmt: skip
        self.oldest = Gauge(
            "redbatch_queue_oldest_waiting_seconds", "Age of the oldest waiting request (by its "
            "stream entry id, Redis's clock), 0 when none waits", ["queue"], registry=r,
        )  # fmt: skip
        exporter.build_info(r)
        # physical queue (shard) -> (backlog, oldest age): summed / maxed per logical queue.
        self._shards: dict[str, tuple[int, float]] = {}

    # -- Tally: what the upkeep did ---------------------------------------------------------

    def requeued(self, queue: str, reason: str, count: int) -> None:
        if count:
            self.requeued_total.labels(queue, reason).inc(count)

    def dead_lettered(self, queue: str, count: int) -> None:
        if count:
            self.dead_lettered_total.labels(queue).inc(count)

    # -- gauges, read once per pass -----------------------------------------------------------

    def refresh(self, keys: QueueKeys) -> None:
        """Read the queue's depths (three pipelined round trips), then set its gauges together,
        so a scrape meanwhile sees the last pass's values, not half of each."""
        q = keys.name
        self._first_sight(q)
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            stream = keys.stream_for(priority)
            pipe.xlen(stream)
            pipe.xpending(stream, GROUP)
            pipe.xinfo_consumers(stream, GROUP)
            pipe.xinfo_groups(stream)
            pipe.xpending_range(stream, GROUP, "-", "+", _PENDING_SCAN)
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dead)
        replies = pipe.execute(raise_on_error=False)
        lanes: dict[str, tuple[int, int]] = {}  # lane -> (waiting, pending)
        names: set[str] = set()
        unstarted: list[bytes | str] = []  # ids read ahead but not started
        delivered: dict[str, str] = {}  # lane stream -> the group's last-delivered id
        for i, priority in enumerate(PRIORITIES):
            length, summary, infos, groups, entries = replies[i * _PER_LANE : (i + 1) * _PER_LANE]
            pending = int(_or_empty(summary, {}).get("pending", 0))
            # Every entry in a lane is waiting or pending: workers delete what they finish.
            lanes[priority] = (max(0, int(_or_empty(length, 0)) - pending), pending)
            names.update(_text(info["name"]) for info in _or_empty(infos, []))
            unstarted += [
                e["message_id"]
                for e in _or_empty(entries, [])
                if e["times_delivered"] < STARTED_DELIVERIES
            ]
            for group in _or_empty(groups, []):
                if _text(group["name"]) == GROUP:
                    delivered[keys.stream_for(priority)] = _text(group["last-delivered-id"])
        delayed, dead = (int(_or_empty(r, 0)) for r in replies[len(PRIORITIES) * _PER_LANE :])
        alive = self._alive(keys, sorted(names))
        oldest = self._oldest_age(keys, delivered, unstarted)
        backlog = sum(waiting for waiting, _ in lanes.values()) + len(unstarted)
        for priority, (waiting, pending) in lanes.items():
            self.waiting.labels(q, priority).set(waiting)
            self.pending.labels(q, priority).set(pending)
        self.delayed.labels(q).set(delayed)
        self.dead_letters.labels(q).set(dead)
        self.consumers.labels(q, ALIVE).set(alive)
        self.consumers.labels(q, DEAD).set(len(names) - alive)
        self._set_logical(q, backlog, oldest)

    def _oldest_age(
        self, keys: QueueKeys, delivered: dict[str, str], unstarted: list[bytes | str]
    ) -> float:
        """Seconds since the oldest waiting entry was added: the first entry after each lane's
        last-delivered id, and the entries read ahead but not started. Entry ids are Redis's
        own milliseconds, so no host clock enters (one more round trip, with TIME)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.time()
        for stream in keys.streams:
            after = delivered.get(stream)
            pipe.xrange(stream, f"({after}" if after else "-", "+", count=1)
        replies = pipe.execute(raise_on_error=False)
        seconds, micros = _or_empty(replies[0], (0, 0))
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        ids = [_text(entries[0][0]) for entries in map(_or_empty_list, replies[1:]) if entries]
        ids += [_text(i) for i in unstarted]
        if not ids or not now_ms:
            return 0.0
        first_ms = min(int(i.split("-")[0]) for i in ids)
        return max(0.0, (now_ms - first_ms) / 1000)

    def _set_logical(self, shard: str, backlog: int, oldest: float) -> None:
        self._shards[shard] = (backlog, oldest)
        queue = logical_name(shard)
        mine = [v for k, v in self._shards.items() if logical_name(k) == queue]
        self.backlog.labels(queue).set(sum(b for b, _ in mine))
        self.oldest.labels(queue).set(max(o for _, o in mine))

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
