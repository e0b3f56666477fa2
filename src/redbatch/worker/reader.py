"""Reads micro-batches from the queues' streams through the consumer group.

The first item of a batch is awaited with ``XREADGROUP ... BLOCK``; then the batch window
(``max_wait_ms``) is timed here, by the client, because Redis times ``BLOCK`` with only about
0.1 s resolution. A batch that is already full (a burst of exactly ``max_batch_size``) is
returned at once without waiting for the window.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

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


class Reader:
    """Owns the worker's reads; holds entries already delivered to it until they are batched."""

    def __init__(
        self,
        client: redis.Redis,
        keyspace: KeySpace,
        queues: tuple[str, ...],
        consumer: str,
        *,
        max_batch_size: int,
        max_wait_ms: int,
        block_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keyspace = keyspace
        self._keys: dict[str, QueueKeys] = {q: keyspace.queue(q) for q in queues}
        self._queue_of_stream = {k.stream.encode(): q for q, k in self._keys.items()}
        self._consumer = consumer
        self._max = max_batch_size
        self._wait_s = max_wait_ms / 1000.0
        self._block_ms = block_ms
        self._clock = clock
        self._held: dict[str, deque[RawEntry]] = {q: deque() for q in queues}
        self._first_seen: dict[str, float] = {}

    def ensure_groups(self) -> None:
        for keys in self._keys.values():
            ensure_queue(self._client, self._keyspace, keys)

    @property
    def holding(self) -> int:
        return sum(len(h) for h in self._held.values())

    def release(self) -> list[RawEntry]:
        """Give up every held entry (to hand back to the stream); holds nothing after."""
        released = [entry for held in self._held.values() for entry in held]
        for held in self._held.values():
            held.clear()
        self._first_seen.clear()
        return released

    def next_batch(self, *, block: bool = True) -> list[RawEntry]:
        """The next batch of one queue, or [] when nothing arrived within ``block_ms``."""
        if not self.holding:
            self._read(self._keys, count=self._max, block_ms=self._block_ms if block else None)
        if not self.holding:
            return []
        queue = min(self._first_seen, key=self._first_seen.__getitem__)
        if block:
            self._fill(queue)
        return self._take(queue)

    def _fill(self, queue: str) -> None:
        window_end = self._first_seen[queue] + self._wait_s
        held = self._held[queue]
        while len(held) < self._max:
            remaining = window_end - self._clock()
            if remaining <= 0:
                return
            if not self._read({queue: self._keys[queue]}, count=self._max - len(held)):
                time.sleep(min(remaining, _FILL_POLL_S))

    def _take(self, queue: str) -> list[RawEntry]:
        held = self._held[queue]
        batch = [held.popleft() for _ in range(min(self._max, len(held)))]
        if held:
            # Leftovers were delivered before anything read later: they go first next time.
            self._first_seen[queue] = self._clock()
        else:
            del self._first_seen[queue]
        return batch

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
                self._held[queue].append(RawEntry(queue, entry_id.decode(), fields))
                self._first_seen.setdefault(queue, now)
                got += 1
        return got


def _stream_or_group_gone(exc: redis.ResponseError) -> bool:
    """NOGROUP on a read; while blocked, a deleted stream answers "UNBLOCKED the stream key
    no longer exists" (Redis 7) and a destroyed group "NOGROUP ... no longer exists"."""
    text = str(exc)
    return "NOGROUP" in text or (text.startswith("UNBLOCKED") and "no longer exists" in text)
