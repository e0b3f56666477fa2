"""Tells a running handler about cancellations that arrive while it runs.

A handler that declares ``requests`` reads ``RequestInfo.cancelled()``. A streaming handler's
steps check the batch's cancel keys anyway (``push_chunks``); a plain or async handler has no
steps, so while its batch runs one thread of the worker checks them every ``interval_s`` (one
``push_chunks`` call without chunks: an ``EXISTS`` per request) and adds what it finds to the
set ``cancelled()`` reads. No check starts before ``interval_s`` has passed, so a batch that
ends sooner costs nothing but two lock hand-offs; nothing at all for a handler without
``requests``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from redbatch.protocol.keys import QueueKeys

Check = Callable[[QueueKeys, list[str]], set[str]]

INTERVAL_S = 0.1


class CancelWatch:
    def __init__(self, check: Check, interval_s: float = INTERVAL_S) -> None:
        """``check(keys, ids)``: the ids among ``ids`` whose cancel key is set."""
        self._check = check
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._job: tuple[QueueKeys, list[str], set[str]] | None = None
        self._jobs = 0  # counts watch() calls: a check belongs to the batch it was made for
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, keys: QueueKeys, ids: list[str], into: set[str]) -> None:
        """From now until ``done()``, add the ids of ``ids`` found cancelled to ``into``."""
        with self._cond:
            if self._thread is None:  # the first batch of a handler that wants requests
                self._thread = threading.Thread(
                    target=self._run, name="redbatch-cancel-watch", daemon=True
                )
                self._thread.start()
            self._job = (keys, ids, into)
            self._jobs += 1
            self._cond.notify()

    def done(self) -> None:
        with self._cond:
            self._job = None
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._job = None
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                jobs = self._jobs
                self._cond.wait(self._interval_s)  # done() or the next batch wakes it early
                job = self._job
                if job is None or self._jobs != jobs:
                    continue
            keys, ids, into = job
            found = self._check(keys, ids)  # outside the lock: a round trip
            with self._cond:
                if self._jobs == jobs and self._job is not None:
                    into.update(found)
