"""The answer of a started mark sent without waiting (``worker.starting``), on its way from
the loop's thread, which reads it, to the handler thread, which needs it before the batch's
outcomes are final."""

from __future__ import annotations

import threading

from redbatch.protocol.fields import CANCELLED, ERROR, OK, Outcome
from redbatch.worker.executor import Ran


class LateCancels:
    def __init__(self) -> None:
        self._known = threading.Event()
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()
        self._into: set[str] | None = None

    def watch(self, into: set[str]) -> None:
        """Add the ids to ``into`` (what ``RequestInfo.cancelled()`` reads) once known."""
        with self._lock:
            self._into = into
            into.update(self._ids)

    def settle(self, ids: frozenset[str]) -> None:
        """The ids the mark's cancel check found (the loop's thread; exactly once)."""
        with self._lock:
            self._ids = ids
            if self._into is not None:
                self._into.update(ids)
        self._known.set()

    def wait(self) -> frozenset[str]:
        """The ids, once the loop has read them (a round trip after the batch started)."""
        self._known.wait()
        return self._ids


def cancel_late(ran: list[Ran], cancelled: frozenset[str]) -> None:
    """Requests of ``cancelled`` (cancelled before their batch was marked started, after the
    early check) end ``cancelled``, whatever the handler made of them."""
    if not cancelled:
        return
    for r in ran:
        if r.request.id in cancelled and r.outcome.status in (OK, ERROR):
            r.outcome = Outcome(r.request.id, CANCELLED, b"cancelled before it ran")
            r.retry, r.retry_delay_s = False, None
