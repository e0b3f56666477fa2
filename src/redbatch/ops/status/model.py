"""What ``redbatch status`` reports, as plain data, and the pure rules that derive it.

No Redis, no clock and no terminal here: ``collect`` reads the facts, these types hold
them, ``to_json`` and ``render`` present them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redbatch.protocol import stats

SCHEMA_VERSION = 1

# Worker states. From the heartbeat: "starting", "draining" (and "stopped", seen only in
# the instant before the heartbeat is deleted); "serving" is "busy" or "idle". Without a
# heartbeat: "dead" holds entries (the scheduler re-queues them), "gone" holds nothing (the
# scheduler removes the consumer).
BUSY, IDLE, DEAD, GONE = "busy", "idle", "dead", "gone"
_SERVING = "serving"


def worker_state(heartbeat_state: str | None, busy: str | None, in_flight: int) -> str:
    """A worker's state from its heartbeat's ``state`` and ``busy`` fields (None: absent; a
    ``heartbeat_state`` of None means no heartbeat at all) and what it holds now."""
    if heartbeat_state is None:
        return DEAD if in_flight else GONE
    if heartbeat_state != _SERVING:
        return heartbeat_state
    # ``busy`` is as old as the last heartbeat (up to a second or so), what a worker holds
    # is read now: holding entries means it has work in hand (a batch running, forming, or
    # its results being written), which is what an operator asks "busy" for.
    return BUSY if busy == "1" or in_flight > 0 else IDLE


def entry_ms(entry_id: bytes | str) -> int | None:
    """The millisecond timestamp of a stream entry id (``<ms>-<seq>``)."""
    text = entry_id.decode("ascii", "replace") if isinstance(entry_id, bytes) else entry_id
    head = text.partition("-")[0]
    return int(head) if head.isdigit() else None


def age_ms(now_ms: int, then_ms: int | None) -> int | None:
    """How long ago ``then_ms`` was; never negative (clocks of other hosts may run ahead)."""
    if then_ms is None or then_ms <= 0:
        return None
    return max(0, now_ms - then_ms)


def covered_s(now: float) -> float:
    """Seconds of the last minute the statistics slots cover at ``now``.

    The window is the current slot, which is still filling, plus the five before it: it
    spans from the start of the oldest slot to now, 50-60 s. Dividing by this (not a fixed
    60 s, nor dropping the current slot) gives a rate that is neither diluted right after
    a slot boundary nor up to 10 s stale. Workers flush about once a second, so the last
    second's items may not be counted yet: the rate reads at most ~2 % low.
    """
    return now - stats.window_slots(now)[-1] * stats.SLOT_S


@dataclass(frozen=True)
class Window:
    """What workers did for a queue over the last minute (summed ``rb:{Q}:stats:<slot>``)."""

    seconds: float = 0.0
    items: int = 0
    batches: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    wait_p50_ms: float | None = None
    wait_p99_ms: float | None = None
    service_p50_ms: float | None = None
    service_p99_ms: float | None = None

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def window(counts: stats.Counts, now: float) -> Window:
    return Window(
        seconds=covered_s(now),
        items=counts.items,
        batches=counts.batches,
        outcomes=dict(sorted(counts.outcomes.items())),
        wait_p50_ms=stats.percentile_ms(counts.wait, 0.5),
        wait_p99_ms=stats.percentile_ms(counts.wait, 0.99),
        service_p50_ms=stats.percentile_ms(counts.service, 0.5),
        service_p99_ms=stats.percentile_ms(counts.service, 0.99),
    )


@dataclass(frozen=True)
class Lane:
    """One priority stream of a queue."""

    priority: str
    length: int = 0  # XLEN: entries waiting plus entries in flight
    in_flight: int = 0  # pending in the group: delivered, not yet acked
    lag: int | None = None  # XINFO GROUPS lag; None when Redis cannot tell (or < 7.0)
    oldest_waiting_age_ms: int | None = None

    @property
    def waiting(self) -> int:
        # Entries stay in the stream until they are acked and deleted together, so the
        # stream's length counts the in-flight ones too; the rest wait for a worker.
        return max(0, self.length - self.in_flight)


@dataclass(frozen=True)
class QueueStatus:
    name: str
    lanes: tuple[Lane, ...]
    delayed: int = 0
    dead: int = 0
    consumers_alive: int = 0  # workers with a heartbeat for this queue
    consumers_dead: int = 0  # group consumers without one
    window: Window = field(default_factory=Window)

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self.lanes)

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.lanes)

    @property
    def lag(self) -> int | None:
        lags = [lane.lag for lane in self.lanes]
        return None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags)

    @property
    def oldest_waiting_age_ms(self) -> int | None:
        return _max_or_none(lane.oldest_waiting_age_ms for lane in self.lanes)


@dataclass(frozen=True)
class WorkerStatus:
    """A worker (a heartbeat, or a group consumer without one). Fields a dead worker's
    heartbeat would have told are None."""

    name: str
    state: str
    queues: tuple[str, ...]
    in_flight: int = 0  # entries it holds, over all its queues and lanes
    host: str | None = None
    pid: int | None = None
    batches: int | None = None
    items: int | None = None
    last_batch_age_ms: int | None = None
    busy_us: int | None = None  # handler time since it started (heartbeat); None if unknown


@dataclass(frozen=True)
class Summary:
    """Totals over every queue, of which ``shown`` are in the snapshot's ``queues``."""

    queues: int
    shown: int
    length: int  # entries in every lane of every queue: waiting + in flight
    delayed: int
    dead: int

    @property
    def complete(self) -> bool:
        return self.shown == self.queues


def summarize(queues: Iterable[QueueStatus]) -> Summary:
    """The summary of a snapshot that shows every queue."""
    listed = list(queues)
    return Summary(
        queues=len(listed),
        shown=len(listed),
        length=sum(lane.length for q in listed for lane in q.lanes),
        delayed=sum(q.delayed for q in listed),
        dead=sum(q.dead for q in listed),
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything ``redbatch status`` shows for one Redis and namespace at ``time_ms``;
    ``summary`` is None when ``queues`` holds every queue (``totals`` computes it)."""

    redis: str
    namespace: str
    time_ms: int
    queues: tuple[QueueStatus, ...]
    workers: tuple[WorkerStatus, ...]
    summary: Summary | None = None

    @property
    def totals(self) -> Summary:
        return self.summary if self.summary is not None else summarize(self.queues)


def _max_or_none(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


def _lane_json(lane: Lane) -> dict[str, Any]:
    return {
        "length": lane.length,
        "waiting": lane.waiting,
        "in_flight": lane.in_flight,
        "lag": lane.lag,
        "oldest_waiting_age_ms": lane.oldest_waiting_age_ms,
    }


def _window_json(w: Window) -> dict[str, Any]:
    return {
        "seconds": round(w.seconds, 3),
        "items": w.items,
        "batches": w.batches,
        "items_per_s": round(w.items_per_s, 3),
        "outcomes": dict(w.outcomes),
        "wait_ms": {"p50": _round(w.wait_p50_ms), "p99": _round(w.wait_p99_ms)},
        "service_ms": {"p50": _round(w.service_p50_ms), "p99": _round(w.service_p99_ms)},
    }


def _queue_json(q: QueueStatus) -> dict[str, Any]:
    return {
        "name": q.name,
        "waiting": q.waiting,
        "in_flight": q.in_flight,
        "delayed": q.delayed,
        "dead": q.dead,
        "consumers": {"alive": q.consumers_alive, "dead": q.consumers_dead},
        "oldest_waiting_age_ms": q.oldest_waiting_age_ms,
        "lag": q.lag,
        "lanes": {lane.priority: _lane_json(lane) for lane in q.lanes},
        "last_minute": _window_json(q.window),
    }


def _worker_json(w: WorkerStatus) -> dict[str, Any]:
    return {
        "name": w.name,
        "state": w.state,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "in_flight": w.in_flight,
        "batches": w.batches,
        "items": w.items,
        "last_batch_age_ms": w.last_batch_age_ms,
        "busy_us": w.busy_us,
    }


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data; the fields are documented in ``redbatch.ops.status``."""
    return {
        "schema": SCHEMA_VERSION,
        "redis": snapshot.redis,
        "namespace": snapshot.namespace,
        "time_ms": snapshot.time_ms,
        "queues": [_queue_json(q) for q in snapshot.queues],
        "workers": [_worker_json(w) for w in snapshot.workers],
        "summary": _summary_json(snapshot.totals),
    }


def _summary_json(s: Summary) -> dict[str, Any]:
    return {
        "queues": s.queues,
        "shown": s.shown,
        "complete": s.complete,
        "length": s.length,
        "delayed": s.delayed,
        "dead": s.dead,
    }
