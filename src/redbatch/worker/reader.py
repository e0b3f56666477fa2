"""Reads micro-batches from the queues' streams through the consumer group.

The first item is awaited with ``XREADGROUP ... BLOCK``; which held entries then form the batch,
and how long to wait for more, is the batch former's decision (``redbatch.batching``: size,
cost budget, window, preferred sizes, and whether waiting can pay: every read is reported to
a ``Company``, whose rate tells the former whether more is coming). The window is timed here,
by the client, because Redis times ``BLOCK`` with only about 0.1 s resolution. A batch that
is already full (a burst of exactly ``max_batch_size``) is returned at once without waiting
for the window.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from redbatch import clock as server_clock
from redbatch.batching import BatchPolicy, Company, Held, decide
from redbatch.errors import MalformedEntry
from redbatch.protocol.fields import (
    COST,
    DEADLINE,
    Request,
    entry_key,
    integer_field_or_default,
    parse_entry,
)
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue
from redbatch.transport.connection import Client
from redbatch.transport.packed import Command, packed_pipeline
from redbatch.transport.topology import by_node, pipelines_apart, topology_of

log = logging.getLogger(__name__)

# While a batch window is open and nothing new has arrived, wait this long between
# non-blocking reads: short against a window of a few ms, long against a Redis round trip.
_FILL_POLL_S = 0.0005
# While a batch runs, empty non-blocking reads back off from the first to the second.
_AHEAD_POLL_MIN_S = 0.0005
_AHEAD_POLL_MAX_S = 0.004
# On a cluster an idle worker polls (see Reader): empty rounds back off up to this long, the
# most an arrival waits there beyond a single node's blocking read.
_IDLE_POLL_MAX_S = 0.01


# Priority name -> the batch former's level (higher runs first).
LEVELS = {p: len(PRIORITIES) - 1 - i for i, p in enumerate(PRIORITIES)}


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class RawEntry:
    """A stream entry as read, parsed once, here: the batch former, the suspect check and
    the batch all use the one parse (each used to parse what it needed again)."""

    queue: str
    entry_id: str
    fields: dict[bytes, bytes]
    # The priority lane (stream) of ``queue`` the entry was read from.
    priority: str = "normal"
    # Unique within a queue: lanes are separate streams, so entry ids may repeat.
    lane_id: str = field(init=False, repr=False, compare=False)
    # The entry's request (its ``priority`` the lane's), or None when it is malformed:
    # ``malformed`` then says why; it is dead-lettered with the batch it is taken into.
    request: Request | None = field(init=False, repr=False, compare=False)
    malformed: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lane_id = entry_key(self.priority, self.entry_id)
        try:
            self.request = parse_entry(self.queue, self.entry_id, self.fields, self.priority)
            self.malformed = ""
        except MalformedEntry as exc:
            self.request = None
            self.malformed = str(exc)


def held_of(entry: RawEntry, arrived: float, level: int = 0) -> Held:
    """What the batch former needs of an entry (in a malformed entry a malformed field
    counts as its default: the entry is dead-lettered with its batch, and costs one slot)."""
    request = entry.request
    if request is None:
        cost = integer_field_or_default(entry.fields, COST)
        deadline_ms = integer_field_or_default(entry.fields, DEADLINE)
    else:
        cost, deadline_ms = request.cost, request.deadline
    return Held(entry.lane_id, arrived, cost, deadline_ms / 1000 if deadline_ms else None, level)


def lanes(keys: QueueKeys) -> tuple[tuple[str, str], ...]:
    """(stream, priority) of every lane of a queue, highest priority first."""
    return tuple((keys.stream_for(p), p) for p in PRIORITIES)


class Reader:
    """Owns the worker's reads; holds entries already delivered to it until they are batched.

    Every lane (priority stream) of every queue is read in one ``XREADGROUP``; the batch
    former orders what is held by (aged) priority. On a Redis Cluster one XREADGROUP may only
    name keys of one slot: reads go one per queue (or shard) in a pipeline redis-py splits by
    node, and the idle read cannot block on all of them at once, so it polls without
    blocking, backing off from 0.5 ms to ``_IDLE_POLL_MAX_S`` between empty rounds.

    What is held is bounded: a worker that runs nothing reads up to one batch, and while a
    batch runs it reads at most one more (``read_ahead``), per stream, so it never hoards
    work other workers could run.
    """

    def __init__(
        self,
        client: Client,
        keyspace: KeySpace,
        queues: tuple[str, ...],
        consumer: str,
        *,
        policy: BatchPolicy,
        block_ms: int,
        clock: Callable[[], float] = server_clock.now_s,
        gated: bool = True,
    ) -> None:
        self._client = client
        self._topology = topology_of(client)
        self._keyspace = keyspace
        self._keys: dict[str, QueueKeys] = {}
        self._lane_of_stream: dict[bytes, tuple[str, str, int]] = {}
        self._streams: dict[Any, Any] = {}
        self._held: dict[str, dict[str, tuple[Held, RawEntry]]] = {}
        self.add_queues(queues)
        self._consumer = consumer
        self.policy = policy
        self._block_ms = block_ms
        # Redis's clock, like the requests' deadlines (ms since epoch) the former compares with.
        self._clock = clock
        self._company = Company()
        # False: the window is waited whenever the policy says (an adaptive window sets it
        # from its own model of the arrivals).
        self._gated = gated

    @property
    def queues(self) -> tuple[str, ...]:
        """The physical queues (queues and shards) read, in the order they were added."""
        return tuple(self._keys)

    def add_queues(self, queues: Iterable[str]) -> list[str]:
        """Read these physical queues too (a queue's new shards); returns those that were
        new. Their groups are not created here: see ``ensure_groups``."""
        added = [q for q in dict.fromkeys(queues) if q not in self._keys]
        for queue in added:
            keys = self._keys[queue] = self._keyspace.queue(queue)
            self._held[queue] = {}
            for stream, priority in lanes(keys):
                self._lane_of_stream[stream.encode()] = (queue, priority, LEVELS[priority])
                self._streams[stream] = ">"
        return added

    def ensure_groups(self, queues: Iterable[str] | None = None) -> None:
        for queue in self._keys if queues is None else queues:
            ensure_queue(self._client, self._keyspace, self._keys[queue])

    @property
    def holding(self) -> int:
        return sum(len(h) for h in self._held.values())

    def held(self) -> list[RawEntry]:
        """Every entry held (read, not yet taken for a batch)."""
        return [entry for held in self._held.values() for _, entry in held.values()]

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

    def top_up(self) -> int:
        """One non-blocking read of what fits beside what is held; how many arrived."""
        return self._read()

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
        if len(waiting) > 1:
            waiting.sort(key=lambda q: min(h.arrived for h, _ in self._held[q].values()))
        wait_s = self.policy.window_s
        rate = self._company.rate_at(now) if self._gated else math.inf
        for queue in waiting:
            held = self._held[queue]
            decision = decide([h for h, _ in held.values()], self.policy, now, rate)
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
        holding = self.holding
        try:
            if block_ms is not None and not self._topology.multi_slot:
                replies = self._poll_idle(count, block_ms)
            elif block_ms is not None:
                command = _read_command(self._consumer, count, self._streams, block_ms)
                replies = self._packed([command])
            else:
                replies = self._read_lanes(self._lane_counts() if counts is None else counts)
        except redis.ResponseError as exc:
            if not _stream_or_group_gone(exc):
                raise
            # An operator deleted a stream or its group under us: recreate and carry on.
            log.warning(
                "stream or consumer group missing, recreating it: %s",
                exc,
                extra={"event": "group_recreated"},
            )
            self.ensure_groups()
            return 0
        got = sum(self._hold(reply) for reply in replies)
        self._company.read(self._clock(), got, holding)
        return got

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
        reads = [(n, part) for n, streams in by_count.items() for part in self._by_slot(streams)]
        if not reads:
            return []
        if not self._topology.one_node:
            return self._read_per_node(reads)
        return self._packed([_read_command(self._consumer, n, streams) for n, streams in reads])

    def _packed(self, commands: list[Command]) -> list[Any]:
        """Reads on one node packed by hiredis, the replies as it parsed them (``_hold``
        reads that form): redis-py's command layer and reply parsing cost about 1 µs an
        entry. Sent again on a lost connection, as redis-py sends a command again."""
        assert isinstance(self._client, redis.Redis)
        return packed_pipeline(self._client, commands)

    def _put_read(self, pipe: Any, read: tuple[int, dict[Any, Any]]) -> None:
        count, streams = read
        pipe.xreadgroup(GROUP, self._consumer, streams, count=count)

    def _read_per_node(self, reads: list[tuple[int, dict[Any, Any]]]) -> list[Any]:
        """A cluster's reads, one pipeline per node. A read that ran is never thrown away:
        its entries are now pending to this worker, and unheld they would wait for the
        scheduler's hung-batch limit. So a node that fails (a primary dying) loses only
        its own reads (tried again next round); the error is raised only when every node
        failed."""
        groups = by_node(self._client, reads, key=lambda read: next(iter(read[1])))
        replies, failures = pipelines_apart(self._client, groups, self._put_read)
        for exc in failures:
            log.debug(
                "a cluster node did not answer a read: %s",
                exc,
                extra={"event": "cluster_read_failed"},
            )
        if failures and not replies:
            raise failures[-1]
        return replies

    def _by_slot(self, streams: dict[Any, Any]) -> list[dict[Any, Any]]:
        """``streams`` as one read, or where a command names one slot one per queue (a
        queue is one slot)."""
        if self._topology.multi_slot:
            return [streams]
        parts: dict[str, dict[Any, Any]] = {}
        for stream, position in streams.items():
            raw = stream if isinstance(stream, bytes) else stream.encode()
            parts.setdefault(self._lane_of_stream[raw][0], {})[stream] = position
        return list(parts.values())

    def _poll_idle(self, count: int, block_ms: int) -> list[Any]:
        """A cluster's idle read: non-blocking rounds over every queue until one brings
        entries or ``block_ms`` passes."""
        deadline = time.monotonic() + block_ms / 1000
        pause = _AHEAD_POLL_MIN_S
        while True:
            replies = self._read_lanes({count: self._streams})
            if any(replies) or time.monotonic() >= deadline:
                return replies
            time.sleep(pause)  # a poll period: no blocking read spans slots
            pause = min(2 * pause, _IDLE_POLL_MAX_S)

    def _hold(self, reply: Any) -> int:
        """Hold one XREADGROUP reply's entries: redis-py's form (cluster reads) or hiredis's
        (a dict of streams on RESP3, each entry's fields a flat list of names and values)."""
        now = self._clock()
        got = 0
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or ():
            queue, priority, level = self._lane_of_stream[stream]
            for entry_id, raw in entries:
                fields = raw
                if type(raw) is list:
                    pairs = iter(raw)
                    fields = dict(zip(pairs, pairs, strict=False))
                if not fields:
                    # Deleted between XADD and delivery: nothing to run or answer; ack it so
                    # it does not sit in our pending list.
                    self._client.xack(stream, GROUP, entry_id)
                    continue
                entry = RawEntry(queue, entry_id.decode(), fields, priority)
                self._held[queue][entry.lane_id] = (held_of(entry, now, level), entry)
                got += 1
        return got


def _read_command(
    consumer: str, count: int, streams: dict[Any, Any], block_ms: int | None = None
) -> Command:
    """XREADGROUP of up to ``count`` from each of ``streams`` (``{stream: ">"}``), waiting up
    to ``block_ms`` for the first entry if given."""
    block = () if block_ms is None else ("BLOCK", block_ms)
    return (
        "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, *block, "STREAMS",
        *streams, *streams.values(),
    )  # fmt: skip


def _stream_or_group_gone(exc: redis.ResponseError) -> bool:
    """NOGROUP on a read; while blocked, a deleted stream answers "UNBLOCKED the stream key
    no longer exists" (Redis 7) and a destroyed group "NOGROUP ... no longer exists"."""
    text = str(exc)
    return "NOGROUP" in text or (text.startswith("UNBLOCKED") and "no longer exists" in text)
