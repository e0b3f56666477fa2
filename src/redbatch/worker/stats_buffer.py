"""What a worker did since its last flush, per queue and 10-second slot, for ``protocol.stats``.

The main loop adds each finished batch (``add``: a lock and a few dict updates, no I/O); the
heartbeat thread swaps the whole buffer out under the lock (``take``) about once a second and
adds it to the slot hashes in its pipeline (``write``). If that pipeline fails (Redis down),
the counts go back (``put_back``) for the next try. Counts are kept per slot, so a late flush
still lands in the slot the work happened in; slots that have left the readers' window are
dropped then, which bounds what an outage can hold (queues x ``WINDOW_SLOTS`` Counts, each of
bounded size).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import redis

from redbatch.protocol import stats
from redbatch.protocol.keys import QueueKeys

# (queue name, slot) -> what happened there
Taken = dict[tuple[str, int], stats.Counts]


def add_counts(total: stats.Counts, more: stats.Counts) -> None:
    """``total += more``, field by field."""
    total.items += more.items
    total.batches += more.batches
    total.busy_us += more.busy_us
    for status, n in more.outcomes.items():
        total.outcomes[status] = total.outcomes.get(status, 0) + n
    histograms = ((total.wait, more.wait), (total.service, more.service), (total.sizes, more.sizes))
    for hist, other in histograms:
        for k, n in other.items():
            hist[k] = hist.get(k, 0) + n


class StatsBuffer:
    """Thread-safe: ``add`` from the main loop, ``take``/``put_back`` from the heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Taken = {}

    def add(
        self,
        queue: str,
        waits_ms: Iterable[float],
        service_ms: float,
        outcomes: Sequence[str],
        *,
        unrun: Mapping[str, int] | None = None,
    ) -> None:
        """One batch the handler ran (``outcomes``, one per item; none: no handler run), plus
        items that never reached it (``unrun``: malformed entries, by status): those count as
        items and outcomes, not as a batch nor in the service-time histogram."""
        slot = stats.slot_of(self._clock())
        with self._lock:
            counts = self._counts.setdefault((queue, slot), stats.Counts())
            if outcomes:
                counts.add_batch(waits_ms, service_ms, outcomes)
            for status, n in (unrun or {}).items():
                counts.outcomes[status] = counts.outcomes.get(status, 0) + n
                counts.items += n

    def take(self) -> Taken:
        """Everything added since the last take; the buffer starts empty again."""
        with self._lock:
            taken, self._counts = self._counts, {}
        return taken

    def put_back(self, taken: Taken) -> None:
        """Return counts a failed flush could not write, dropping slots nobody reads any
        more (they would only be written into hashes outside every reader's window)."""
        oldest = stats.window_slots(self._clock())[-1]
        with self._lock:
            for (queue, slot), counts in taken.items():
                if slot < oldest:
                    continue
                add_counts(self._counts.setdefault((queue, slot), stats.Counts()), counts)

    def pending(self) -> int:
        """Items held for the next flush (for tests and diagnostics)."""
        with self._lock:
            return sum(c.items for c in self._counts.values())


def write(pipe: redis.client.Pipeline, keys: Mapping[str, QueueKeys], taken: Taken) -> None:
    """Queue the HINCRBYs and EXPIRE of ``taken`` on ``pipe`` (executed by the caller)."""
    for (queue, slot), counts in taken.items():
        fields = counts.fields()
        if not fields:
            continue
        key = keys[queue].stats(slot)
        for name, n in fields.items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, stats.TTL_S)
