"""One clock for every part: Redis's.

Deadlines, due times and ages are milliseconds of the Redis server's clock (``TIME``):
admit.lua stamps a request's ``enq`` and ``deadline`` with it, and workers and schedulers
compare against it. A host whose own clock is off (by seconds or minutes) then changes no
outcome: each process reads ``TIME`` now and then and counts from there with its monotonic
clock, never with its wall clock. Until the first reading it falls back to the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

# How often the server's clock is read again (s): it bounds the drift between the two
# clocks' rates (ppm: well under a millisecond per minute), not their offset.
RESYNC_S = 30.0


class ServerClock:
    """The Redis server's time as this process best knows it. Thread-safe."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._base: tuple[float, float] | None = None  # (server ms, monotonic s) at a reading
        self._warned = False

    @property
    def synced(self) -> bool:
        return self._base is not None

    def sync(self, client: Any) -> None:
        """Read the server's clock (one ``TIME``), the midpoint of the round trip as the
        moment of reading; Redis errors propagate."""
        before = self._monotonic()
        seconds, micros = client.time()
        after = self._monotonic()
        with self._lock:
            self._base = (seconds * 1000 + micros / 1000, (before + after) / 2)

    def refresh(self, client: Any) -> None:
        """``sync`` when never done or older than RESYNC_S; a failure keeps the last reading
        (one warning until a reading succeeds again)."""
        base = self._base
        if base is not None and self._monotonic() - base[1] < RESYNC_S:
            return
        try:
            self.sync(client)
        except redis.RedisError as exc:
            if not self._warned:
                log.warning("cannot read Redis's clock (TIME): %s; counting on from the last", exc)
                self._warned = True
            return
        self._warned = False

    def now_ms(self) -> int:
        base = self._base
        if base is None:
            return int(self._wall() * 1000)
        return int(base[0] + (self._monotonic() - base[1]) * 1000)

    def now_s(self) -> float:
        return self.now_ms() / 1000


# The process's one clock (worker, scheduler, CLI); tests build their own ServerClock.
SERVER = ServerClock()


def now_ms() -> int:
    """Now on the Redis server's clock, ms since the epoch."""
    return SERVER.now_ms()


def now_s() -> float:
    """Now on the Redis server's clock, s since the epoch."""
    return SERVER.now_s()
