"""The asyncio handle: an ``AsyncProducer`` request's future outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from redbatch.errors import ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore
from redbatch.producer.chunk_feed import RAISE, ChunkFeed, Ended, Restarted, check_resume
from redbatch.protocol.chunks import Chunk
from redbatch.protocol.fields import OK, Outcome

# Sets the cancel keys of (queue, request ids); raises ConnectionFailed.
CancelFn = Callable[[str, list[str]], Awaitable[None]]


# Takes note that nobody waits for these handles any more: their local wait timed out, or
# (``cancelled``) the waiting task was cancelled. Returns at once: any cancel goes to Redis
# in a task.
class GoneFn(Protocol):
    def __call__(self, handles: list[AsyncHandle], *, cancelled: bool) -> None: ...


class AsyncHandle:
    """A submitted request; ``await result()`` waits for its outcome."""

    __slots__ = (
        "_cancel", "_changed", "_core", "_ct", "_feed", "_future", "_gone", "id", "once", "queue",
    )  # fmt: skip

    def __init__(
        self,
        core: ProducerCore,
        cancel: CancelFn,
        queue: str,
        request_id: str,
        ct: str,
        gone: GoneFn | None = None,
        once: bool = False,
    ) -> None:
        """``gone`` is told of a local timeout or a cancelled wait; ``once``: submitted with a
        caller-chosen id."""
        self.id = request_id
        self.queue = queue
        self.once = once
        self._core = core
        self._cancel = cancel
        self._gone = gone
        self._ct = ct
        self._future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        # A streaming request's chunks, and the event its stream() waits on: made on the
        # first chunk or stream() call.
        self._feed: ChunkFeed | None = None
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<AsyncHandle {self.queue}/{self.id} {'done' if self.done() else 'waiting'}>"

    def done(self) -> bool:
        return self._future.done()

    async def result(self, timeout: float | None = None) -> Any:
        """Like ``Handle.result`` (a timeout cancels the request with the producer's
        ``cancel_on_timeout``, in a task). Cancelling the awaiting task (``asyncio.wait_for``,
        a TaskGroup, a disconnected HTTP client) cancels the request too, unless the
        producer was made with ``cancel_on_cancel=False``."""
        return await self._result(timeout, timeout)

    async def _result(self, wait: float | None, timeout: float | None) -> Any:
        """``result`` waiting ``wait`` seconds, of a caller's ``timeout`` (for its message)."""
        try:
            outcome = await self._wait(wait, timeout)
        except ResultTimeout:
            if self._gone is not None:
                self._gone([self], cancelled=False)
            raise
        except asyncio.CancelledError:
            if self._gone is not None and not self.done():
                self._gone([self], cancelled=True)
            raise
        return self._core.value(outcome, self._ct)

    async def cancel(self) -> bool:
        """Like ``Handle.cancel``."""
        if self.done():
            return False
        if self._feed is not None:
            self._feed.cancelled = True  # no more chunks, only the outcome
        await self._cancel(self.queue, [self.id])
        return True

    @property
    def position(self) -> tuple[int, int]:
        """Like ``Handle.position``."""
        return self._feed.seen if self._feed is not None else (0, -1)

    async def stream(
        self, timeout: float | None = None, *, resume: str = RAISE
    ) -> AsyncIterator[Any]:
        """Like ``Handle.stream``, as an async iterator. Cancelling the iterating task cancels
        the request (unless the producer was made with ``cancel_on_cancel=False``)."""
        check_resume(resume)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                item = await self._next_chunk(resume, deadline, timeout)
            except ResultTimeout:
                if self._gone is not None:
                    self._gone([self], cancelled=False)
                raise
            except asyncio.CancelledError:
                if self._gone is not None and not self.done():
                    self._gone([self], cancelled=True)
                raise
            if item is None:
                self._core.value(self._future.result(), self._ct)  # raises unless ok
                return
            if isinstance(item, Ended):
                return  # Final ended it: the result comes with the rest of its batch
            if isinstance(item, Restarted):
                raise StreamRestarted(self.id, item.attempt)
            yield self._core.value(Outcome(self.id, OK, item.body), self._ct)

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

    async def _wait(self, wait: float | None, timeout: float | None = None) -> Outcome:
        try:
            # shield: a timeout or cancellation of this wait must not cancel the future,
            # which other waiters (and a later call) still use. asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # future completes, and a cancelled caller then carries on.
            async with asyncio.timeout(wait):
                return await asyncio.shield(self._future)
        except TimeoutError:
            raise ResultTimeout(self.id, (wait if timeout is None else timeout) or 0.0) from None

    def _resolve(self, outcome: Outcome) -> None:
        if not self._future.done():
            self._future.set_result(outcome)
        if self._changed is not None:
            self._changed.set()

    def _fail(self, error: Exception) -> None:
        if not self._future.done():
            self._future.set_exception(error)
            # Mark retrieved: nobody may ever await a handle the caller dropped.
            self._future.exception()
        if self._changed is not None:
            self._changed.set()
