"""A handle's chunks of a streaming request: ``stream()`` and ``position`` for each way of
waiting (a thread on the group's latch, a task on an event), kept apart from the handles'
results (``handle``) so each module does one thing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

from redbatch.errors import ResultTimeout
from redbatch.producer.base_handle import BaseHandle
from redbatch.producer.chunk_feed import RAISE, ChunkFeed, Ended, Restarted
from redbatch.producer.latch import Latch
from redbatch.producer.oneloop import wrong_loop
from redbatch.protocol.chunks import Chunk
from redbatch.protocol.fields import Outcome

T = TypeVar("T")


class ThreadStream(BaseHandle):
    """``Handle``'s streaming half: its chunks are guarded by, and waited on with, the
    group's latch (``Handle`` holds it)."""

    __slots__ = ()

    _latch: Latch

    def _value(self) -> Any:
        raise NotImplementedError

    @property
    def position(self) -> tuple[int, int]:
        """(attempt, seq) of the last chunk ``stream()`` yielded; (0, -1) before the first:
        what ``Producer.stream_from`` resumes after."""
        with self._latch.cond:
            return self._feed.seen if self._feed is not None else (0, -1)

    def stream(self, timeout: float | None = None, *, resume: str = RAISE) -> Iterator[Any]:
        """Yield the request's chunks in order, each once, then end (an error outcome raises
        as ``result()`` would). Submit with ``stream=True`` (or use ``Producer.stream``).

        A worker killed mid-stream re-runs the request: by default the iterator raises
        StreamRestarted (``.attempt``), after which ``result()`` gives the new attempt's
        value and a new ``stream()`` yields its chunks from the first; ``resume="restart"``
        goes on with the new attempt's chunks instead. ``timeout`` bounds the whole stream
        (ResultTimeout; with ``cancel_on_timeout`` the request is then cancelled). Raises
        ConfigError at once for a request submitted without ``stream=True``."""
        self._check_streaming(resume)
        return self._stream(timeout, resume)

    def _stream(self, timeout: float | None, resume: str) -> Iterator[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = self._next_chunk(resume, deadline, timeout)
            if item is None:
                self._value()  # raises unless ok
                return
            if isinstance(item, Ended):
                return  # Final ended it: the result comes with the rest of its batch
            yield self._chunk_value(item)

    def _next_chunk(
        self, resume: str, deadline: float | None, timeout: float | None
    ) -> Chunk | Restarted | Ended | None:
        """The next chunk or restart; None once the outcome is in and no chunk is left."""
        with self._latch.cond:
            if self._feed is None:
                self._feed = ChunkFeed()
            while True:
                item = self._feed.take(resume)
                if item is not None or self.done():
                    return item
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                self._latch.wait_change(wait)
        self._left(cancelled=False)
        raise ResultTimeout(self.id, timeout or 0.0)

    def _chunks(self, chunks: list[Chunk]) -> None:
        """Chunks for this request arrived (the listener's thread)."""
        with self._latch.cond:
            if self._feed is None:
                self._feed = ChunkFeed()
            self._feed.offer(chunks)
            self._latch.cond.notify_all()


class TaskStream(BaseHandle):
    """``AsyncHandle``'s streaming half: a task waits on ``_changed``, set when chunks or the
    outcome arrive (``AsyncHandle`` holds the outcome's future)."""

    __slots__ = ("_changed",)

    _future: asyncio.Future[Outcome]
    _changed: asyncio.Event | None

    async def _told(self, waiting: Awaitable[T]) -> T:
        raise NotImplementedError

    def _check_loop(self) -> None:
        """WrongEventLoop when awaited on a loop other than its producer's (a task on another
        loop cannot await its future: asyncio raises an error naming no fix)."""
        if asyncio.get_running_loop() is not self._future.get_loop():
            raise wrong_loop()

    @property
    def position(self) -> tuple[int, int]:
        """Like ``Handle.position``."""
        return self._feed.seen if self._feed is not None else (0, -1)

    def stream(self, timeout: float | None = None, *, resume: str = RAISE) -> AsyncIterator[Any]:
        """Like ``Handle.stream``, as an async iterator (``async for``). Cancelling the
        iterating task cancels the request (unless the producer was made with
        ``cancel_on_cancel=False``)."""
        self._check_streaming(resume)
        return self._stream(timeout, resume)

    async def _stream(self, timeout: float | None, resume: str) -> AsyncIterator[Any]:
        self._check_loop()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            item = await self._told(self._next_chunk(resume, deadline, timeout))
            if item is None:
                self._core.value(self._future.result(), self._ct)  # raises unless ok
                return
            if isinstance(item, Ended):
                return  # Final ended it: the result comes with the rest of its batch
            yield self._chunk_value(item)

    async def _next_chunk(
        self, resume: str, deadline: float | None, timeout: float | None
    ) -> Chunk | Restarted | Ended | None:
        feed = self._open_feed()
        changed = self._changed
        assert changed is not None
        while True:
            item = feed.take(resume)
            if item is not None or self.done():
                return item
            changed.clear()
            wait = None if deadline is None else deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                raise ResultTimeout(self.id, timeout or 0.0) from None

    def _open_feed(self) -> ChunkFeed:
        if self._feed is None:
            self._feed = ChunkFeed()
            self._changed = asyncio.Event()
        return self._feed

    def _chunks(self, chunks: list[Chunk]) -> None:
        """Chunks for this request arrived (the listener's task)."""
        self._open_feed().offer(chunks)
        if self._changed is not None:
            self._changed.set()
