"""Per-queue statistics over the last minute, kept in Redis so any process can read them.

Workers count what they did in memory and add it, about once a second, to the hash of the
current 10-second slot, ``rb:{Q}:stats:<slot>`` (slot = unix seconds // 10; TTL 2 minutes),
with ``HINCRBY``: nothing on the per-batch path, one pipeline per second per worker. Readers
(``redbatch status``, the scheduler's metrics) sum the last ``WINDOW_SLOTS`` slots.

Hash fields (all integers):

- ``items``, ``batches``: requests and batches finished;
- ``busy_us``: microseconds the handler ran (divided by the window: a busy ratio);
- ``o:<status>``: requests per outcome (``o:ok``, ``o:error``, ...);
- ``w:<k>``: requests whose queue wait (enqueue to batch start) fell in bucket k;
- ``s:<k>``: requests whose batch's service time (the handler's) fell in bucket k;
- ``b:<k>``: batches of ``size_upper(k)`` items or fewer, more than half that
  (k = 0: one item; 1: two; 2: three or four; 3: five to eight; ...).

Bucket k holds values up to ``upper_ms(k)`` = 0.1 ms x 1.25**k (~12 % resolution, 0.1 ms to
hours), so percentiles merge exactly across workers and slots. Batch sizes use powers of two,
as the worker's ``redbatch_batch_size`` histogram does. Readers skip fields they do not know:
a field added here is read by new readers only, and old workers simply never write it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SLOT_S = 10
WINDOW_SLOTS = 6  # the last minute
TTL_S = 2 * SLOT_S * WINDOW_SLOTS
_BASE_MS = 0.1
_GROWTH = 1.25
_MAX_BUCKET = 120

ITEMS, BATCHES, BUSY_US = "items", "batches", "busy_us"
OUTCOME, WAIT, SERVICE, SIZE = "o:", "w:", "s:", "b:"


def slot_of(unix_s: float) -> int:
    return int(unix_s // SLOT_S)


def window_slots(unix_s: float) -> list[int]:
    """The slots of the last minute, newest first (the current one is still filling)."""
    now = slot_of(unix_s)
    return [now - i for i in range(WINDOW_SLOTS)]


def bucket(ms: float) -> int:
    if not ms > _BASE_MS:  # also NaN
        return 0
    return min(_MAX_BUCKET, math.ceil(math.log(ms / _BASE_MS, _GROWTH) - 1e-9))


def upper_ms(k: int) -> float:
    return _BASE_MS * _GROWTH**k


def size_bucket(items: int) -> int:
    """The batch-size bucket of a batch of ``items`` (>= 1): the k with 2**k >= items."""
    return max(0, items - 1).bit_length()


def size_upper(k: int) -> int:
    return int(2**k)


@dataclass
class Counts:
    """What one process did since its last flush (or what a window adds up to)."""

    items: int = 0
    batches: int = 0
    busy_us: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)
    service: dict[int, int] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)  # size bucket -> batches

    def add_batch(
        self, waits_ms: Iterable[float], service_ms: float, outcomes: Iterable[str]
    ) -> None:
        size = 0
        for status, n in Counter(outcomes).items():
            self.outcomes[status] = self.outcomes.get(status, 0) + n
            size += n
        # A batch's waits take few distinct values (whole ms): one log per value, not item.
        for ms, n in Counter(waits_ms).items():
            k = bucket(ms)
            self.wait[k] = self.wait.get(k, 0) + n
        k = bucket(service_ms)
        self.service[k] = self.service.get(k, 0) + size
        if size:
            k = size_bucket(size)
            self.sizes[k] = self.sizes.get(k, 0) + 1
        self.items += size
        self.batches += 1
        self.busy_us += max(0, round(service_ms * 1000))

    def fields(self) -> dict[str, int]:
        """The increments for ``HINCRBY`` (zero counts left out)."""
        out = {ITEMS: self.items, BATCHES: self.batches, BUSY_US: self.busy_us}
        out.update({OUTCOME + s: n for s, n in self.outcomes.items()})
        out.update({f"{WAIT}{k}": n for k, n in self.wait.items()})
        out.update({f"{SERVICE}{k}": n for k, n in self.service.items()})
        out.update({f"{SIZE}{k}": n for k, n in self.sizes.items()})
        return {k: v for k, v in out.items() if v}

    def __bool__(self) -> bool:
        return bool(self.items or self.batches)


def merge(hashes: Iterable[Mapping[bytes | str, bytes | str]]) -> Counts:
    """Sum slot hashes as read with HGETALL (unknown or unreadable fields are skipped)."""
    total = Counts()
    for raw in hashes:
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else key
            try:
                n = int(value)
            except (TypeError, ValueError):
                continue
            _add_field(total, name, n)
    return total


def _add_field(total: Counts, name: str, n: int) -> None:
    if name == ITEMS:
        total.items += n
    elif name == BATCHES:
        total.batches += n
    elif name == BUSY_US:
        total.busy_us += n
    elif name.startswith(OUTCOME):
        status = name[len(OUTCOME) :]
        total.outcomes[status] = total.outcomes.get(status, 0) + n
    elif name.startswith((WAIT, SERVICE, SIZE)) and name[2:].isdigit():
        hist = _histogram(total, name[:2])
        k = int(name[2:])
        hist[k] = hist.get(k, 0) + n


def _histogram(total: Counts, prefix: str) -> dict[int, int]:
    if prefix == WAIT:
        return total.wait
    return total.service if prefix == SERVICE else total.sizes


def percentile_ms(hist: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) as its bucket's upper edge; None when empty."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return upper_ms(k)
    return upper_ms(max(hist))
