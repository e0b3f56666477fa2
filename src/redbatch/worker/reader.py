"""Reads micro-batches from the queues' streams through the consumer group.

The first item is awaited with ``XREADGROUP ... BLOCK``; which held entries then form the batch,
and how long to wait for more, is the batch former's decision (``redbatch.batching``: size,
cost budget, window, preferred sizes). The window is timed here, by the client, because Redis
times ``BLOCK`` with only about 0.1 s resolution. A batch that is already full (a burst of
exactly ``max_batch_size``) is returned at once without waiting for the window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from redbatch.batching import BatchPolicy, Held, decide
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue

log = logging.getLogger(__name__)

# While a batch window is open and nothing new has arrived, wait this long between
# non-blocking reads: short against a window of a few ms, long against a Redis round trip.
_FILL_POLL_S = 0.0005


@dataclass(frozen=True, slots=True)
class RawEntry:
    queue: str
    entry_id: str
    fields: dict[bytes, bytes]


def _number(fields: dict[bytes, bytes], name: bytes) -> int:
    raw = fields.get(name, b"")
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


def held_of(entry: RawEntry, arrived: float) -> Held:
    """What the batch former needs of an entry (a malformed field counts as its default: the
    entry is dead-lettered when it is parsed, and meanwhile costs one slot)."""
    deadline_ms = _number(entry.fields, b"deadline")
    return Held(
        key=entry.entry_id,
        arrived=arrived,
        cost=max(1, _number(entry.fields, b"cost")),
        deadline=deadline_ms / 1000 if deadline_ms else None,
    )


class Reader:
    """Owns the worker's reads; holds entries already delivered to it until they are batched."""

    def __init__(
        self,
        client: redis.Redis,
        keyspace: KeySpace,
        queues: tuple[str, ...],
        consumer: str,
        *,
        policy: BatchPolicy,
        block_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keyspace = keyspace
        self._keys: dict[str, QueueKeys] = {q: keyspace.queue(q) for q in queues}
        self._queue_of_stream = {k.stream.encode(): q for q, k in self._keys.items()}
        self._consumer = consumer
        self._policy = policy
        self._block_ms = block_ms
        # Wall clock, like the requests' deadlines (ms since epoch) the former compares with.
        self._clock = clock
        self._held: dict[str, dict[str, tuple[Held, RawEntry]]] = {q: {} for q in queues}

    def ensure_groups(self) -> None:
        for keys in self._keys.values():
            ensure_queue(self._client, self._keyspace, keys)

    @property
    def holding(self) -> int:
        return sum(len(h) for h in self._held.values())

    def release(self) -> list[RawEntry]:
        """Give up every held entry (to hand back to the stream); holds nothing after."""
        released = [entry for held in self._held.values() for _, entry in held.values()]
        for held in self._held.values():
            held.clear()
        return released

    def next_batch(self) -> list[RawEntry]:
        """The next batch of one queue (expired entries ride along, to be answered
        ``expired``), or [] when nothing arrived within ``block_ms``."""
        if not self.holding:
            self._read(self._keys, count=self._policy.max_batch_size, block_ms=self._block_ms)
        if not self.holding:
            return []
        # The queue whose oldest held entry arrived first goes first.
        queue = min(
            (q for q in self._held if self._held[q]),
            key=lambda q: min(h.arrived for h, _ in self._held[q].values()),
        )
        held = self._held[queue]
        while True:
            decision = decide([h for h, _ in held.values()], self._policy, self._clock())
            chosen = decision.batch + decision.expired
            if chosen:
                return [held.pop(str(h.key))[1] for h in chosen]
            room = max(1, self._policy.max_batch_size - len(held))
            if not self._read({queue: self._keys[queue]}, count=room):
                time.sleep(min(decision.wait_s, _FILL_POLL_S))

    def _read(self, keys: dict[str, QueueKeys], *, count: int, block_ms: int | None = None) -> int:
        streams: dict[Any, Any] = {k.stream: ">" for k in keys.values()}
        try:
            reply: Any = self._client.xreadgroup(
                GROUP, self._consumer, streams, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if not _stream_or_group_gone(exc):
                raise
            # An operator deleted a stream or its group under us: recreate and carry on.
            log.warning("stream or consumer group missing, recreating it: %s", exc)
            self.ensure_groups()
            return 0
        now = self._clock()
        got = 0
        for stream, entries in reply or ():
            queue = self._queue_of_stream[stream]
            for entry_id, fields in entries:
                if not fields:
                    # Deleted between XADD and delivery: nothing to run or answer; ack it so
                    # it does not sit in our pending list.
                    self._client.xack(stream, GROUP, entry_id)
                    continue
                entry = RawEntry(queue, entry_id.decode(), fields)
                self._held[queue][entry.entry_id] = (held_of(entry, now), entry)
                got += 1
        return got


def _stream_or_group_gone(exc: redis.ResponseError) -> bool:
    """NOGROUP on a read; while blocked, a deleted stream answers "UNBLOCKED the stream key
    no longer exists" (Redis 7) and a destroyed group "NOGROUP ... no longer exists"."""
    text = str(exc)
    return "NOGROUP" in text or (text.startswith("UNBLOCKED") and "no longer exists" in text)
