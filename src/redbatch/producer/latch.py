"""The lock a group of ``Handle``s (one ``map`` call, or one ``submit``) is waited on."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Latch:
    """Wakes whoever waits on a group of handles: one per ``map`` call (shared by all of its
    handles), one per ``submit``. One lock per group, not an Event per request: building a
    Condition per request was a fifth of a producer's CPU in ``map``."""

    __slots__ = ("_cond", "_pending", "_watchers")

    def __init__(self, count: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending = count
        self._watchers = 0  # threads waiting on one handle: woken at every count-down

    def count_down(self) -> None:
        with self._cond:
            self._pending -= 1
            if self._pending <= 0 or self._watchers:
                self._cond.notify_all()

    def wait_all(self, timeout: float | None) -> bool:
        """True once every handle of the group has its outcome, False after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending <= 0, timeout)

    @property
    def cond(self) -> threading.Condition:
        """The group's lock: a handle's chunks are guarded by it too."""
        return self._cond

    def wait_change(self, timeout: float | None) -> None:
        """With ``cond`` held: wait until a handle of the group ends or gets chunks."""
        self._watchers += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._watchers -= 1

    def wait_one(self, done: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            self._watchers += 1
            try:
                return self._cond.wait_for(done, timeout)
            finally:
                self._watchers -= 1
