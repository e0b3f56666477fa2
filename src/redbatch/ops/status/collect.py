"""Reading one Redis for ``redbatch status``: three pipelined round trips and one SCAN
(a summary first reads every queue's sizes and details only some: ``choose``).

1. per queue in ``rb:queues``: each lane's XLEN, XINFO GROUPS and XINFO CONSUMERS; the
   delayed and dead counts; the last minute's statistics slots;
2. SCAN for heartbeat keys. On Redis 7.0 a worker that has read nothing yet is not a consumer
   of its group, so the group alone cannot list idle workers; the SCAN walks the whole
   keyspace (a few round trips per 100,000 keys), which is fine for an operator's command;
3. each lane's oldest waiting entry and each heartbeat hash.

Nothing here writes. Reads are not one atomic view: a request may finish between two round
trips, so the numbers can be off by what happened in those milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from redbatch.errors import ConfigError
from redbatch.ops.status import choose
from redbatch.ops.status.model import (
    Lane,
    QueueStatus,
    Snapshot,
    Summary,
    WorkerStatus,
    age_ms,
    entry_ms,
    window,
    worker_state,
)
from redbatch.protocol import stats
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.records import (
    BEAT_BATCHES,
    BEAT_BUSY,
    BEAT_BUSY_US,
    BEAT_HOST,
    BEAT_ITEMS,
    BEAT_LAST_BATCH,
    BEAT_PID,
    BEAT_QUEUES,
    BEAT_STATE,
)
from redbatch.transport.connection import Client, address

_SCAN_COUNT = 1000
_WORKER_INFIX = "}:worker:"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(_text(value))
    except ValueError:
        return None


def _missing(reply: object) -> bool:
    """The stream or its group does not exist (yet): the lane is empty, not an error."""
    if not isinstance(reply, redis.ResponseError):
        return False
    message = str(reply)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


def _value(reply: Any, default: Any) -> Any:
    """A pipeline reply; ``default`` for a missing stream or group, other errors raised."""
    if _missing(reply):
        return default
    if isinstance(reply, Exception):
        raise reply
    return reply


@dataclass
class _LaneFacts:
    priority: str
    stream: str
    length: int
    group: dict[str, Any] | None  # this lane's XINFO GROUPS row for GROUP
    consumers: dict[str, int]  # consumer -> pending in this lane


@dataclass
class _QueueFacts:
    keys: QueueKeys
    lanes: list[_LaneFacts]
    delayed: int
    dead: int
    counts: stats.Counts
    oldest_ms: dict[str, int | None] = field(default_factory=dict)  # priority -> entry ms

    def pending_by_consumer(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for lane in self.lanes:
            for name, pending in lane.consumers.items():
                held[name] = held.get(name, 0) + pending
        return held


def _queue_names(client: Client, keyspace: KeySpace) -> list[QueueKeys]:
    found = []
    for raw in client.smembers(keyspace.queues):
        try:
            found.append(keyspace.queue(_text(raw)))
        except ConfigError:
            continue  # a name added by hand that cannot form keys: nothing can serve it
    return sorted(found, key=lambda k: k.name)


def _group_row(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    for row in groups:
        if _text(row.get("name")) == GROUP:
            return row
    return None


def _read_queues(client: Client, queues: list[QueueKeys], now: float) -> list[_QueueFacts]:
    slots = stats.window_slots(now)
    pipe = client.pipeline(transaction=False)
    for keys in queues:
        for stream in keys.streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.xinfo_consumers(stream, GROUP)
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dead)
        for slot in slots:
            pipe.hgetall(keys.stats(slot))
    replies = iter(pipe.execute(raise_on_error=False))
    facts = []
    for keys in queues:
        lanes = []
        for priority, stream in zip(PRIORITIES, keys.streams, strict=True):
            length = int(_value(next(replies), 0))
            group = _group_row(_value(next(replies), []))
            consumers = {_text(c["name"]): int(c["pending"]) for c in _value(next(replies), [])}
            lanes.append(_LaneFacts(priority, stream, length, group, consumers))
        delayed = int(_value(next(replies), 0))
        dead = int(_value(next(replies), 0))
        counts = stats.merge([_value(next(replies), {}) for _ in slots])
        facts.append(_QueueFacts(keys, lanes, delayed, dead, counts))
    return facts


def _heartbeat_keys(client: Client, keyspace: KeySpace) -> list[tuple[str, str, str]]:
    """(queue, worker, key) of every heartbeat in the namespace, found with one SCAN.

    Braces are literal in SCAN's glob, and neither the namespace nor queue names can hold a
    glob character or a ``}``, so the pattern matches heartbeats of every queue and no
    other key of the contract."""
    prefix = f"{keyspace.namespace}:{{"
    found = []
    for raw in client.scan_iter(match=f"{prefix}*{_WORKER_INFIX}*", count=_SCAN_COUNT):
        key = _text(raw)
        queue, sep, name = key[len(prefix) :].partition(_WORKER_INFIX)
        if sep and name:
            found.append((queue, name, key))
    return sorted(found)


def _read_details(
    client: Client, facts: list[_QueueFacts], heartbeat_keys: list[tuple[str, str, str]]
) -> dict[tuple[str, str], dict[bytes, bytes]]:
    """Fill each lane's oldest waiting entry time into ``facts``; return the heartbeats."""
    pipe = client.pipeline(transaction=False)
    asked: list[tuple[_QueueFacts, str]] = []
    for queue in facts:
        for lane in queue.lanes:
            if lane.group is None:
                continue
            # Not XRANGE - +: entries stay in the stream until acked, so its head is usually
            # in flight (running, or held by a dead worker). The first entry after the
            # group's last-delivered-id is the oldest one no worker has received yet. (Its
            # fields come along: one payload per lane per refresh.)
            last = _text(lane.group.get("last-delivered-id") or "0-0")
            pipe.xrange(lane.stream, f"({last}", "+", count=1)
            asked.append((queue, lane.priority))
    for _queue, _name, key in heartbeat_keys:
        pipe.hgetall(key)
    replies = pipe.execute(raise_on_error=False)
    for (queue, priority), reply in zip(asked, replies[: len(asked)], strict=True):
        entries = _value(reply, [])
        queue.oldest_ms[priority] = entry_ms(entries[0][0]) if entries else None
    heartbeats = {}
    for (queue_name, name, _key), reply in zip(heartbeat_keys, replies[len(asked) :], strict=True):
        found = _value(reply, {})
        if found:  # it may have expired since the SCAN
            heartbeats[(queue_name, name)] = found
    return heartbeats


def _queue_status(q: _QueueFacts, alive: set[str], now: float, now_ms: int) -> QueueStatus:
    lanes = tuple(
        Lane(
            priority=lane.priority,
            length=lane.length,
            in_flight=int(lane.group.get("pending") or 0) if lane.group else 0,
            # Redis < 7.0 has no lag field; 7.x reports None when its counters cannot tell.
            lag=_int(lane.group.get("lag")) if lane.group else None,
            oldest_waiting_age_ms=age_ms(now_ms, q.oldest_ms.get(lane.priority)),
        )
        for lane in q.lanes
    )
    consumers = set(q.pending_by_consumer())
    return QueueStatus(
        name=q.keys.name,
        lanes=lanes,
        delayed=q.delayed,
        dead=q.dead,
        consumers_alive=len(alive),
        consumers_dead=len(consumers - alive),
        window=window(q.counts, now),
    )


def _field(fields: Mapping[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    return None if raw is None else _text(raw)


def _live_worker(
    name: str, beat: Mapping[bytes, bytes], queues: set[str], in_flight: int, now_ms: int
) -> WorkerStatus:
    listed = (_field(beat, BEAT_QUEUES) or "").split()
    return WorkerStatus(
        name=name,
        state=worker_state(_field(beat, BEAT_STATE), _field(beat, BEAT_BUSY), in_flight),
        queues=tuple(listed or sorted(queues)),
        in_flight=in_flight,
        host=_field(beat, BEAT_HOST),
        pid=_int(beat.get(BEAT_PID.encode())),
        batches=_int(beat.get(BEAT_BATCHES.encode())),
        items=_int(beat.get(BEAT_ITEMS.encode())),
        last_batch_age_ms=age_ms(now_ms, _int(beat.get(BEAT_LAST_BATCH.encode()))),
        busy_us=_int(beat.get(BEAT_BUSY_US.encode())),
    )


def _workers(
    facts: Iterable[_QueueFacts],
    heartbeats: dict[tuple[str, str], dict[bytes, bytes]],
    now_ms: int,
) -> tuple[WorkerStatus, ...]:
    held: dict[str, int] = {}
    consumer_of: dict[str, set[str]] = {}
    for q in facts:
        for name, pending in q.pending_by_consumer().items():
            held[name] = held.get(name, 0) + pending
            consumer_of.setdefault(name, set()).add(q.keys.name)
    beat_of: dict[str, dict[bytes, bytes]] = {}
    beat_queues: dict[str, set[str]] = {}
    for (queue, name), fields in heartbeats.items():
        beat_of.setdefault(name, fields)  # one worker writes the same hash for every queue
        beat_queues.setdefault(name, set()).add(queue)
    workers = []
    for name in sorted(set(held) | set(beat_of)):
        in_flight = held.get(name, 0)
        beat = beat_of.get(name)
        if beat is None:
            state = worker_state(None, None, in_flight)
            workers.append(WorkerStatus(name, state, tuple(sorted(consumer_of[name])), in_flight))
        else:
            workers.append(_live_worker(name, beat, beat_queues[name], in_flight, now_ms))
    return tuple(workers)


def _shown(
    client: Client,
    keyspace: KeySpace,
    queues: list[QueueKeys],
    heartbeat_keys: list[tuple[str, str, str]],
    now_ms: int,
    limit: int,
) -> tuple[list[QueueKeys], Summary]:
    """The queues a summary details (``choose``) and the totals over all of them."""
    sizes = choose.read_sizes(client, queues)
    always = {queue for queue, _name, _key in heartbeat_keys}
    always |= choose.watched(client, keyspace, now_ms)
    shown = set(choose.choose(sizes, always, limit))
    detailed = [keys for keys in queues if keys.name in shown]
    summary = Summary(
        queues=len(queues),
        shown=len(detailed),
        length=sum(s.length for s in sizes.values()),
        delayed=sum(s.delayed for s in sizes.values()),
        dead=sum(s.dead for s in sizes.values()),
    )
    return detailed, summary


def collect(
    client: Client,
    keyspace: KeySpace,
    now: float,
    *,
    limit: int | None = None,
    only: Callable[[str], bool] | None = None,
) -> Snapshot:
    """Read the status of the queues of ``keyspace`` and of its workers; ``now`` is unix
    seconds (ages and the statistics window are taken against it). With ``limit`` and more
    queues than that, a summary: totals over every queue, details of the served ones and the
    ``limit`` holding most (``choose``). ``only``: the queues whose name it passes, as if
    they were all (the dashboard's search). Redis errors propagate."""
    now_ms = int(now * 1000)
    queues = _queue_names(client, keyspace)
    if only is not None:
        queues = [keys for keys in queues if only(keys.name)]
    heartbeat_keys = _heartbeat_keys(client, keyspace)
    summary = None
    if limit is not None and len(queues) > limit:
        queues, summary = _shown(client, keyspace, queues, heartbeat_keys, now_ms, limit)
    facts = _read_queues(client, queues, now)
    heartbeats = _read_details(client, facts, heartbeat_keys)
    alive: dict[str, set[str]] = {}
    for queue, name in heartbeats:
        alive.setdefault(queue, set()).add(name)
    return Snapshot(
        redis=address(client),
        namespace=keyspace.namespace,
        time_ms=now_ms,
        queues=tuple(_queue_status(q, alive.get(q.keys.name, set()), now, now_ms) for q in facts),
        workers=_workers(facts, heartbeats, now_ms),
        summary=summary,
    )
