"""Which queues a scheduler pass visits: those that may hold work for it, not every queue.

A queue needs the scheduler only while something in it can go wrong without a producer or
worker noticing: entries delivered to a consumer (its worker may die or hang), consumers in
a group (they may need removing), delayed retries (they fall due). An idle queue with
requests waiting and no worker needs nothing: visiting 10,000 of them every second cost half
a core and a fifth of Redis's (issue 21). So each pass:

1. the *candidates* are the members of ``rb:watch`` marked within ``KEEP_MS``: workers mark
   every queue they serve on each heartbeat, and the scheduler re-marks every queue it finds
   holding work, so a dead worker's queue stays a candidate until its entries are re-queued
   and its consumer removed, whoever was watching before;
2. one slice of ``rb:queues`` (``SSCAN``, so that the whole set is swept every ``SWEEP_S``;
   all of it on the first pass) joins them: the safety net for queues no party marked
   (workers older than ``rb:watch``, a scheduler that was down longer than ``KEEP_MS``,
   retries written by hand);
3. one pipelined *probe* of those (``XINFO GROUPS`` per lane, ``ZCARD`` of the delayed set)
   keeps the queues that hold work (``needs_upkeep``): the duties run on these only.

The cost of a pass is then the queues being served or holding work, plus ``N / SWEEP_S``
probes a second for N known queues.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from redbatch import clock
from redbatch.errors import ConfigError
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys
from redbatch.transport.connection import Client

log = logging.getLogger(__name__)

# A mark keeps its queue a candidate this long (ms): several passes beyond a worker's
# heartbeat renewal (1 s), and room for a slow pass or a scheduler restarting.
KEEP_MS = 30_000
# Every queue in rb:queues is probed at least once per this many seconds.
SWEEP_S = 60.0
# Queues per probe pipeline: bounds one round trip's size and memory.
PROBE_BATCH = 500
_SSCAN_MIN = 10


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def needs_upkeep(groups: Sequence[Sequence[dict[str, Any]]], delayed: int) -> bool:
    """Whether a queue holds work for the scheduler, from each lane's ``XINFO GROUPS`` rows
    (empty for a missing lane) and its delayed-set size: entries pending to a consumer,
    consumers in the group, or delayed retries."""
    if delayed > 0:
        return True
    for rows in groups:
        for row in rows:
            if _text(row.get("name")) != GROUP:
                continue
            if int(row.get("pending") or 0) > 0 or int(row.get("consumers") or 0) > 0:
                return True
    return False


def sweep_count(total: int, interval_s: float, sweep_s: float = SWEEP_S) -> int:
    """Members to ask each pass's ``SSCAN`` for so ``total`` are swept every ``sweep_s``."""
    passes = max(1.0, sweep_s / interval_s)
    return max(_SSCAN_MIN, math.ceil(total / passes))


@dataclass(frozen=True)
class Selection:
    """One pass's queues: ``busy`` hold work (the duties run on them); ``probed`` are every
    queue looked at this pass (a superset: the gauges are refreshed on these)."""

    busy: list[QueueKeys]
    probed: list[QueueKeys]


class Watch:
    """Chooses each pass's queues (module docstring); not thread-safe, one per scheduler."""

    def __init__(
        self,
        client: Client,
        keyspace: KeySpace,
        interval_s: float,
        *,
        sweep_s: float = SWEEP_S,
        keep_ms: int = KEEP_MS,
        now_ms: Callable[[], int] = clock.now_ms,
    ) -> None:
        self._client = client
        self._keyspace = keyspace
        self._interval_s = interval_s
        self._sweep_s = sweep_s
        self._keep_ms = keep_ms
        self._now_ms = now_ms
        self._cursor = 0
        self._count = _SSCAN_MIN
        self._swept_once = False
        self._bad_names: set[str] = set()

    def select(self) -> Selection:
        """Read the candidates and this pass's slice of the sweep, probe them, re-mark the
        busy ones; Redis errors propagate (the caller decides what a failed pass does)."""
        clock.SERVER.refresh(self._client)
        now = self._now_ms()
        key = self._keyspace.watch
        pipe = self._client.pipeline(transaction=False)
        # Old marks go: their queue is swept like any other (and re-marked if busy).
        pipe.zremrangebyscore(key, "-inf", f"({now - self._keep_ms}")
        pipe.zrangebyscore(key, now - self._keep_ms, "+inf")
        candidates = pipe.execute()[1]
        names = {_text(n) for n in candidates} | self._sweep()
        probed = self._parse(sorted(names))
        busy = self._probe(probed)
        if busy:
            self._client.zadd(key, {q.name: now for q in busy})
        return Selection(busy, probed)

    def _sweep(self) -> set[str]:
        """This pass's slice of rb:queues; the whole set on the first pass."""
        found: set[str] = set()
        if self._cursor == 0:  # a new round: size the slices from the set's current size
            total = int(self._client.scard(self._keyspace.queues))
            self._count = sweep_count(total, self._interval_s, self._sweep_s)
        while True:
            count = self._count if self._swept_once else max(self._count, 1000)
            self._cursor, members = self._client.sscan(
                self._keyspace.queues, self._cursor, count=count
            )
            found.update(_text(m) for m in members)
            if self._cursor == 0:
                log.debug(
                    "swept every queue of %s",
                    self._keyspace.queues,
                    extra={"event": "queues_swept"},
                )
            if self._swept_once or self._cursor == 0:
                break
        self._swept_once = True
        return found

    def _parse(self, names: Iterable[str]) -> list[QueueKeys]:
        queues = []
        for name in names:
            try:
                queues.append(self._keyspace.queue(name))
            except ConfigError:
                if name not in self._bad_names:  # say it once, not every pass
                    self._bad_names.add(name)
                    log.warning(
                        "ignoring invalid queue name %r",
                        name,
                        extra={"event": "queue_name_invalid"},
                    )
        return queues

    def _probe(self, queues: list[QueueKeys]) -> list[QueueKeys]:
        busy = []
        for first in range(0, len(queues), PROBE_BATCH):
            batch = queues[first : first + PROBE_BATCH]
            pipe = self._client.pipeline(transaction=False)
            for keys in batch:
                for stream in keys.streams:
                    pipe.xinfo_groups(stream)
                pipe.zcard(keys.delayed)
            replies = pipe.execute(raise_on_error=False)
            width = len(batch[0].streams) + 1 if batch else 0
            for i, keys in enumerate(batch):
                own = replies[i * width : (i + 1) * width]
                groups = [_rows(r) for r in own[:-1]]
                if needs_upkeep(groups, int(_value(own[-1], 0))):
                    busy.append(keys)
        return busy


def _value(reply: Any, default: Any) -> Any:
    """A pipeline reply; ``default`` for a missing stream, other errors raised."""
    if isinstance(reply, redis.ResponseError) and "no such key" in str(reply).lower():
        return default
    if isinstance(reply, Exception):
        raise reply
    return reply


def _rows(reply: Any) -> list[dict[str, Any]]:
    return list(_value(reply, []))
