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
from redbatch.protocol.fields import entry_key
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue

log = logging.getLogger(__name__)

# While a batch window is open and nothing new has arrived, wait this long between
# non-blocking reads: short against a window of a few ms, long against a Redis round trip.
_FILL_POLL_S = 0.0005
# While a batch runs, empty non-blocking reads back off from the first to the second.
_AHEAD_POLL_MIN_S = 0.0005
_AHEAD_POLL_MAX_S = 0.004


# Priority name -> the batch former's level (higher runs first).
LEVELS = {p: len(PRIORITIES) - 1 - i for i, p in enumerate(PRIORITIES)}


@dataclass(frozen=True, slots=True)
class RawEntry:
    queue: str
    entry_id: str
    fields: dict[bytes, bytes]
    # The priority lane (stream) of ``queue`` the entry was read from.
    priority: str = "normal"

    @property
    def lane_id(self) -> str:
        """Unique within a queue: lanes are separate streams, so entry ids may repeat."""
        return entry_key(self.priority, self.entry_id)


def _number(fields: dict[bytes, bytes], name: bytes) -> int:
    raw = fields.get(name, b"")
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


def held_of(entry: RawEntry, arrived: float, level: int = 0) -> Held:
    """What the batch former needs of an entry (a malformed field counts as its default: the
    entry is dead-lettered when it is parsed, and meanwhile costs one slot)."""
    deadline_ms = _number(entry.fields, b"deadline")
    return Held(
        key=entry.lane_id,
        arrived=arrived,
        cost=max(1, _number(entry.fields, b"cost")),
        deadline=deadline_ms / 1000 if deadline_ms else None,
        priority=level,
    )


def lanes(keys: QueueKeys) -> tuple[tuple[str, str], ...]:
    """(stream, priority) of every lane of a queue, highest priority first."""
    return tuple((keys.stream_for(p), p) for p in PRIORITIES)


class Reader:
    """Owns the worker's reads; holds entries already delivered to it until they are batched.

    Every lane (priority stream) of every queue is read in one ``XREADGROUP``; the batch
    former orders what is held by (aged) priority. What is held is bounded: a worker that
    runs nothing reads up to one batch, and while a batch runs it reads at most one more
    (``read_ahead``), per stream, so it never hoards work other workers could run.
    """

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
        self._lane_of_stream: dict[bytes, tuple[str, str, int]] = {
            stream.encode(): (queue, priority, LEVELS[priority])
            for queue, keys in self._keys.items()
            for stream, priority in lanes(keys)
        }
        self._streams: dict[Any, Any] = {s.decode(): ">" for s in self._lane_of_stream}
        self._consumer = consumer
        self.policy = policy
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

    def hold_again(self, entries: list[RawEntry]) -> None:
        """Take back entries given out but never started (a Redis error came first)."""
        now = self._clock()
        for entry in entries:
            held = held_of(entry, now, LEVELS.get(entry.priority, 0))
            self._held[entry.queue][entry.lane_id] = (held, entry)

    def next_batch(self) -> list[RawEntry]:
        """The next due batch of one queue (expired entries ride along, to be answered
        ``expired``), waiting for its window if need be; [] when nothing arrived within
        ``block_ms``."""
        if not self.holding:
            self._read(self.policy.max_batch_size, block_ms=self._block_ms)
        if not self.holding:
            return []
        while True:
            batch, wait_s = self._take_due()
            if batch:
                return batch
            if not self._read():
                time.sleep(min(wait_s, _FILL_POLL_S))

    def due_batch(self, *, read: bool = True) -> list[RawEntry]:
        """A batch that is due now, or [] (never waits); ``read`` first tops up what is held
        from the streams without blocking."""
        if read:
            self._read()
        return self._take_due()[0]

    def read_ahead(self, finished: Callable[[float], bool]) -> None:
        """While a batch runs: read until one batch is held ahead, or until ``finished(t)``
        (which waits up to t seconds for the running batch) says it ended. Reads do not block
        in Redis (it times BLOCK in 0.1 s steps); between empty reads the wait doubles up to
        a few ms, so an idle queue costs little and a finished batch is noticed at once."""
        poll = _AHEAD_POLL_MIN_S
        while not finished(0):
            counts = self._lane_counts()
            if not counts:
                return
            if self._read(counts=counts):
                poll = _AHEAD_POLL_MIN_S
                continue
            if self.holding >= self.policy.max_batch_size:
                return  # a full batch is held and nothing better came: decode it now
            if finished(poll):
                return
            poll = min(2 * poll, _AHEAD_POLL_MAX_S)

    def _take_due(self) -> tuple[list[RawEntry], float]:
        """The due batch of the queue whose oldest held entry came first (any due queue goes
        before waiting), or ([], how long until one may be due)."""
        now = self._clock()
        waiting = [q for q in self._held if self._held[q]]
        waiting.sort(key=lambda q: min(h.arrived for h, _ in self._held[q].values()))
        wait_s = self.policy.window_s
        for queue in waiting:
            held = self._held[queue]
            decision = decide([h for h, _ in held.values()], self.policy, now)
            chosen = decision.batch + decision.expired
            if chosen:
                return [held.pop(str(h.key))[1] for h in chosen], 0.0
            wait_s = min(wait_s, decision.wait_s)
        return [], wait_s

    def _read(
        self,
        count: int = 0,
        *,
        block_ms: int | None = None,
        counts: dict[int, dict[Any, Any]] | None = None,
    ) -> int:
        """Read new entries: with ``block_ms``, one blocking read of up to ``count`` per stream
        (nothing is held then); without, one non-blocking read per lane, of as many as fit
        in a batch beside what is held at that priority or higher, so held low-priority
        entries never keep a worker from reading the high ones."""
        try:
            if block_ms is not None:
                replies = [
                    self._client.xreadgroup(
                        GROUP, self._consumer, self._streams, count=count, block=block_ms
                    )
                ]
            else:
                replies = self._read_lanes(self._lane_counts() if counts is None else counts)
        except redis.ResponseError as exc:
            if not _stream_or_group_gone(exc):
                raise
            # An operator deleted a stream or its group under us: recreate and carry on.
            log.warning("stream or consumer group missing, recreating it: %s", exc)
            self.ensure_groups()
            return 0
        return sum(self._hold(reply) for reply in replies)

    def _lane_counts(self) -> dict[int, dict[Any, Any]]:
        """count -> {stream: ">"}: how many to read from each lane that has room."""
        by_count: dict[int, dict[Any, Any]] = {}
        for stream, (queue, _, level) in self._lane_of_stream.items():
            above = sum(1 for h, _ in self._held[queue].values() if h.priority >= level)
            n = self.policy.max_batch_size - above
            if n > 0:
                by_count.setdefault(n, {})[stream] = ">"
        return by_count

    def _read_lanes(self, by_count: dict[int, dict[Any, Any]]) -> list[Any]:
        if not by_count:
            return []
        pipe = self._client.pipeline(transaction=False)
        for n, streams in by_count.items():
            pipe.xreadgroup(GROUP, self._consumer, streams, count=n)
        replies: list[Any] = pipe.execute()
        return replies

    def _hold(self, reply: Any) -> int:
        now = self._clock()
        got = 0
        for stream, entries in reply or ():
            queue, priority, level = self._lane_of_stream[stream]
            for entry_id, fields in entries:
                if not fields:
                    # Deleted between XADD and delivery: nothing to run or answer; ack it so
                    # it does not sit in our pending list.
                    self._client.xack(stream, GROUP, entry_id)
                    continue
                entry = RawEntry(queue, entry_id.decode(), fields, priority)
                self._held[queue][entry.lane_id] = (held_of(entry, now, level), entry)
                got += 1
        return got


def _stream_or_group_gone(exc: redis.ResponseError) -> bool:
    """NOGROUP on a read; while blocked, a deleted stream answers "UNBLOCKED the stream key
    no longer exists" (Redis 7) and a destroyed group "NOGROUP ... no longer exists"."""
    text = str(exc)
    return "NOGROUP" in text or (text.startswith("UNBLOCKED") and "no longer exists" in text)
