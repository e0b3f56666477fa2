"""Tells a running handler about cancellations that arrive while it runs.

A handler that declares ``requests`` reads ``RequestInfo.cancelled()``. A streaming handler's
steps check the batch's cancel keys anyway (``push_chunks``); a plain or async handler has no
steps, so one thread of the worker wakes every ``interval_s`` and, when the batch running
then has run that long, checks its cancel keys (one ``push_chunks`` call without chunks: an
``EXISTS`` per request) and adds what it finds to the set ``cancelled()`` reads. A batch
costs two lock hand-offs, no thread wake-up; only a long one costs a round trip per
interval. Nothing at all runs for a handler without ``requests``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from redbatch.protocol.keys import QueueKeys

Check = Callable[[QueueKeys, list[str]], set[str]]

INTERVAL_S = 0.1


class CancelWatch:
    def __init__(self, check: Check, interval_s: float = INTERVAL_S) -> None:
        """``check(keys, ids)``: the ids among ``ids`` whose cancel key is set."""
        self._check = check
        self._interval_s = interval_s
        self._lock = threading.Lock()
        # The running batch: its keys, ids, the set to add to, and when it started.
        self._job: tuple[QueueKeys, list[str], set[str], float] | None = None
        self._jobs = 0  # counts watch() calls: a check's answer belongs to its own batch
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, keys: QueueKeys, ids: list[str], into: set[str]) -> None:
        """From now until ``done()``, add the ids of ``ids`` found cancelled to ``into``."""
        with self._lock:
            if self._thread is None:  # the first batch of a handler that wants requests
                self._thread = threading.Thread(
                    target=self._run, name="redbatch-cancel-watch", daemon=True
                )
                self._thread.start()
            self._jobs += 1
            self._job = (keys, ids, into, time.monotonic())

    def done(self) -> None:
        with self._lock:
            self._job = None

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(self._interval_s):
            with self._lock:
                job, jobs = self._job, self._jobs
            if job is None:
                continue
            keys, ids, into, started = job
            if time.monotonic() - started < self._interval_s:
                continue  # a batch that may end before it is worth a round trip
            found = self._check(keys, ids)
            with self._lock:
                if self._jobs == jobs and self._job is not None:
                    into.update(found)
