"""What the dashboard's page shows, computed from ``redbatch status`` snapshots and the
statistics slots workers write (``protocol.stats``). No Redis and no clock here.

- Queues: ``redbatch status`` reports each physical queue (a sharded queue's shards ``Q#k``
  and its own keys ``Q``); the page shows one row per queue a producer names, summed over its
  shards, with the shards and lanes on demand. The row has the ``status --json`` fields.
- History: statistics slots live 2 minutes in Redis (``stats.TTL_S``); ``History`` keeps what
  it read for longer, so charts cover the last ``HISTORY_SLOTS`` slots the dashboard watched.
- Busy ratio: a worker's heartbeat carries ``busy_us`` (handler time since it started);
  ``BusyRatios`` divides its growth by the time between two snapshots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from redbatch.ops.status.model import (
    Lane,
    QueueStatus,
    Snapshot,
    WorkerStatus,
    to_json,
    window,
)
from redbatch.protocol import stats
from redbatch.protocol.keys import PRIORITIES, logical_name

# Slots Redis still holds (their TTL is two windows); every refresh reads them all, since a
# worker that lost Redis for a while adds its counts to past slots when it is back.
READ_SLOTS = stats.TTL_S // stats.SLOT_S
HISTORY_SLOTS = 60  # ten minutes of 10-second slots, kept in memory
BUSY_WINDOW_MS = 10_000  # a busy ratio covers at most this much of the past ...
BUSY_MIN_SPAN_MS = 1_500  # ... and at least this much (heartbeats are ~1 s apart)


def read_slots(now: float) -> list[int]:
    """The statistics slots to read at ``now`` (unix s), newest first."""
    current = stats.slot_of(now)
    return [current - i for i in range(READ_SLOTS)]


def _lane_sum(priority: str, lanes: list[Lane]) -> Lane:
    lags = [lane.lag for lane in lanes]
    ages = [lane.oldest_waiting_age_ms for lane in lanes if lane.oldest_waiting_age_ms is not None]
    return Lane(
        priority=priority,
        length=sum(lane.length for lane in lanes),
        in_flight=sum(lane.in_flight for lane in lanes),
        lag=None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags),
        oldest_waiting_age_ms=max(ages) if ages else None,
    )


def combine(name: str, parts: list[QueueStatus], counts: stats.Counts, now: float) -> QueueStatus:
    """One queue from its physical queues: counts summed, lanes summed per priority, the
    oldest waiting request the oldest of any; consumers: the most any part has (every worker
    of a sharded queue serves all of its parts); the last minute from ``counts`` (the parts'
    slots merged, so percentiles are exact)."""
    if len(parts) == 1 and parts[0].name == name:
        return replace(parts[0], window=window(counts, now))
    lanes = tuple(
        _lane_sum(p, [lane for q in parts for lane in q.lanes if lane.priority == p])
        for p in PRIORITIES
    )
    return QueueStatus(
        name=name,
        lanes=lanes,
        delayed=sum(q.delayed for q in parts),
        dead=sum(q.dead for q in parts),
        consumers_alive=max(q.consumers_alive for q in parts),
        consumers_dead=max(q.consumers_dead for q in parts),
        window=window(counts, now),
    )


def batch_sizes(counts: stats.Counts) -> list[dict[str, int]]:
    """The batch-size histogram: ``{"le": upper size, "batches": n}`` per power-of-two bucket
    from 1 to the largest seen (empty buckets included); [] when no worker reported sizes."""
    if not counts.sizes:
        return []
    top = max(counts.sizes)
    return [{"le": stats.size_upper(k), "batches": counts.sizes.get(k, 0)} for k in range(top + 1)]


@dataclass
class SlotReads:
    """One read of the statistics slots: the last minute of each physical queue and of each
    queue (its parts merged), and each queue's slots (parts merged) by (queue, slot)."""

    physical: dict[str, stats.Counts] = field(default_factory=dict)
    logical: dict[str, stats.Counts] = field(default_factory=dict)
    slots: dict[tuple[str, int], stats.Counts] = field(default_factory=dict)


@dataclass
class History:
    """Per queue (logical) and slot: what its workers did, as last read from Redis."""

    keep: int = HISTORY_SLOTS
    _slots: dict[str, dict[int, stats.Counts]] = field(default_factory=dict)

    def update(self, queue: str, slot: int, counts: stats.Counts) -> None:
        """Record a read of a slot. Counts in a slot only grow while its hash lives, so a
        read showing fewer items (the hash expired) never replaces what was seen."""
        slots = self._slots.setdefault(queue, {})
        known = slots.get(slot)
        if known is None or counts.items >= known.items:
            slots[slot] = counts

    def prune(self, queues: set[str], now: float) -> None:
        """Forget queues no longer listed and slots older than ``keep``."""
        oldest = stats.slot_of(now) - self.keep + 1
        for name in list(self._slots):
            if name not in queues:
                del self._slots[name]
                continue
            for slot in [s for s in self._slots[name] if s < oldest]:
                del self._slots[name][slot]

    def series(self, queue: str, now: float) -> list[dict[str, Any]]:
        """One point per slot, oldest first, from the oldest slot known (at least the slots
        Redis holds) to the current one, which covers only the time since it began."""
        slots = self._slots.get(queue, {})
        current = stats.slot_of(now)
        first = min([current - READ_SLOTS + 1, *slots])
        return [_point(s, slots.get(s, stats.Counts()), now) for s in range(first, current + 1)]


def _point(slot: int, counts: stats.Counts, now: float) -> dict[str, Any]:
    start = slot * stats.SLOT_S
    seconds = max(1e-3, min(now, start + stats.SLOT_S) - start)
    return {
        "t_ms": start * 1000,
        "items": counts.items,
        "batches": counts.batches,
        "items_per_s": round(counts.items / seconds, 3),
        "mean_batch": round(counts.items / counts.batches, 2) if counts.batches else None,
        "wait_p50_ms": stats.percentile_ms(counts.wait, 0.5),
        "wait_p99_ms": stats.percentile_ms(counts.wait, 0.99),
        "service_p50_ms": stats.percentile_ms(counts.service, 0.5),
        "service_p99_ms": stats.percentile_ms(counts.service, 0.99),
    }


@dataclass
class BusyRatios:
    """Each worker's handler time over wall time, from the ``busy_us`` of recent snapshots."""

    _seen: dict[str, deque[tuple[int, int]]] = field(default_factory=dict)

    def observe(self, time_ms: int, workers: Iterable[WorkerStatus]) -> dict[str, float | None]:
        """Record one snapshot's workers; each one's ratio over the last ``BUSY_WINDOW_MS``
        (None until two snapshots ``BUSY_MIN_SPAN_MS`` apart carry its ``busy_us``)."""
        ratios: dict[str, float | None] = {}
        for worker in workers:
            if worker.busy_us is None:
                ratios[worker.name] = None
                continue
            seen = self._seen.setdefault(worker.name, deque())
            if seen and worker.busy_us < seen[-1][1]:
                seen.clear()  # a new process with the same name
            seen.append((time_ms, worker.busy_us))
            while len(seen) > 2 and time_ms - seen[1][0] >= BUSY_WINDOW_MS:
                seen.popleft()
            span = time_ms - seen[0][0]
            grown_ms = (worker.busy_us - seen[0][1]) / 1000
            ratios[worker.name] = (
                round(min(1.0, grown_ms / span), 3) if span >= BUSY_MIN_SPAN_MS else None
            )
        for gone in set(self._seen) - set(ratios):
            del self._seen[gone]
        return ratios


def document(
    snapshot: Snapshot,
    reads: SlotReads,
    history: History,
    busy: Mapping[str, float | None],
    now: float,
) -> dict[str, Any]:
    """The ``/api/overview`` document: the ``status --json`` object with one entry per queue
    (shards summed; ``shards``: the parts' names when sharded, ``parts``: their rows),
    ``batch_sizes`` per queue and part, ``busy_ratio`` per worker, and ``history``."""
    groups: dict[str, list[QueueStatus]] = {}
    for q in snapshot.queues:
        groups.setdefault(logical_name(q.name), []).append(q)
    totals = {name: reads.logical.get(name, stats.Counts()) for name in groups}
    queues = tuple(combine(name, parts, totals[name], now) for name, parts in groups.items())
    out = to_json(replace(snapshot, queues=queues))
    for row in out["queues"]:
        parts = groups[row["name"]]
        row["batch_sizes"] = batch_sizes(totals[row["name"]])
        sharded = len(parts) > 1 or parts[0].name != row["name"]
        row["shards"] = [q.name for q in parts] if sharded else []
        row["parts"] = _parts(snapshot, parts, reads.physical) if sharded else []
    for row in out["workers"]:
        row["busy_ratio"] = busy.get(row["name"])
    out["history"] = {
        "slot_s": stats.SLOT_S,
        "queues": {name: history.series(name, now) for name in groups},
    }
    return out


def _parts(
    snapshot: Snapshot, parts: list[QueueStatus], counts: Mapping[str, stats.Counts]
) -> list[dict[str, Any]]:
    rows = to_json(replace(snapshot, queues=tuple(parts), workers=()))["queues"]
    for row in rows:
        row["batch_sizes"] = batch_sizes(counts.get(row["name"], stats.Counts()))
    return list(rows)
