"""Pure pieces of admission shared by the sync and asyncio producers: sequence numbers that
make a re-sent admission recognisable, and the deadline a caller's timeout sets.
"""

from __future__ import annotations

import itertools
import threading
import time

from redbatch.protocol.scripts import Admission

# How long Redis keeps a producer's set of applied admission numbers after its last
# admission (ms): a re-send comes within the caller's timeout or redis-py's few retries,
# seconds; the set itself holds only the numbers of admissions still in flight.
ADMITTED_TTL_MS = 600_000


class Admissions:
    """Hands out one producer's admission sequence numbers and knows which are in flight:
    the lowest in flight is the low-water mark admit.lua may forget below. Thread-safe."""

    def __init__(self, producer_id: str) -> None:
        self._producer_id = producer_id
        self._numbers = itertools.count(1)
        self._open: set[int] = set()
        self._lock = threading.Lock()

    def open(self) -> Admission:
        """A new admission: send it (and any re-send of it) with these numbers."""
        with self._lock:
            seq = next(self._numbers)
            self._open.add(seq)
            low = min(self._open)
        return Admission(self._producer_id, seq, low, ADMITTED_TTL_MS)

    def close(self, admission: Admission) -> None:
        """The admission is answered, or given up: it is never sent again."""
        with self._lock:
            self._open.discard(admission.seq)


class Deadline:
    """When a caller's wait must end (``time.monotonic``); ``None`` timeout: never."""

    __slots__ = ("at", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at
