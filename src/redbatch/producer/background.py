"""Cancels after a local timeout, sent off the caller's path.

A wait that times out raises ResultTimeout at its timeout; the cancel it implies (the
producer's ``cancel_on_timeout``) goes to Redis afterwards, from a thread of its own (sync)
or a task (asyncio), with redis-py's usual retries, so a stalled Redis or a silent network
never holds the caller. Best effort: a cancel that fails is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from redbatch.errors import RedbatchError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long close() waits for cancels still queued before it leaves them (s).
STOP_WAIT_S = 1.0


class BackgroundCancels:
    """One daemon thread per producer, started at the first timed-out wait."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join(STOP_WAIT_S)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            quietly(job)


def quietly(job: Callable[[], None]) -> None:
    try:
        job()
    except RedbatchError as exc:
        _warn(exc)


async def quietly_async(job: Coroutine[Any, Any, Any]) -> None:
    try:
        await job
    except RedbatchError as exc:
        _warn(exc)


def _warn(exc: RedbatchError) -> None:
    log.warning("could not cancel timed-out request(s): %s", exc)


class AsyncBackgroundCancels:
    """The asyncio twin: one task per cancel, referenced until done (asyncio keeps only
    weak references to tasks)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_WAIT_S)
        for task in list(self._tasks):
            task.cancel()

    @staticmethod
    async def _run(job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        await quietly_async(job())


class DaemonPool:
    """Runs a sync producer's admissions when the caller has a deadline: the caller waits on
    the future for the time it has left and raises ResultTimeout at its deadline even while
    redis-py is still connecting or retrying. Daemon threads, started as needed (up to
    ``size``, idle ones reused), so a call stuck on a dead network never holds up exit."""

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._stopped = False

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run ``work`` on a pool thread; after ``stop`` it runs on the caller's thread: a
        job queued behind the stop sentinels would never run (its caller would wait out its
        whole deadline)."""
        future: Future[T] = Future()
        with self._lock:
            stopped = self._stopped
            if not stopped:
                if self._idle == 0 and self._threads < self._size:
                    self._threads += 1
                    threading.Thread(target=self._run, name=self._name, daemon=True).start()
                # Under the lock: never behind the sentinels of a concurrent stop().
                self._jobs.put((future, work))
        if stopped:
            _settle(future, work)
        return future

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for _ in range(self._threads):
                self._jobs.put(None)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            future, work = job
            _settle(future, work)


def _settle(future: Future[T], work: Callable[[], T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(work())
    except BaseException as exc:  # the caller (or its done callback) sees it
        future.set_exception(exc)
