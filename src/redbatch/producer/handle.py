"""Handles on submitted requests: ``Handle`` (threads wait on a latch) and ``AsyncHandle``
(tasks await a future). What they share lives in ``BaseHandle``; a subclass adds only how a
caller waits, so new ways of reading an outcome (a stream of parts) extend both at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

from redbatch.errors import ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore
from redbatch.producer.chunk_feed import RAISE, ChunkFeed, Ended, Restarted, check_resume
from redbatch.producer.requests import Gathered
from redbatch.protocol.chunks import Chunk
from redbatch.protocol.fields import OK, Outcome

T = TypeVar("T")


class GoneFn(Protocol):
    """Takes note that nobody waits for these handles any more: their local wait timed out,
    or (``cancelled``) the waiting task was cancelled. Returns at once: any cancel goes to
    Redis in the background."""

    def __call__(self, handles: list[Any], *, cancelled: bool) -> None: ...


class BaseHandle:
    """A submitted request: its id, the physical queue (shard) it went to, and how its
    outcome becomes a value."""

    __slots__ = (
        "_cancel", "_core", "_ct", "_feed", "_gone", "id", "once", "queue", "submitted_at",
    )  # fmt: skip

    def __init__(
        self,
        core: ProducerCore,
        cancel: Callable[[str, list[str]], Any],
        queue: str,
        request_id: str,
        gone: GoneFn | None = None,
        once: bool = False,
    ) -> None:
        """``cancel`` sets the cancel keys of (queue, ids); ``gone`` is told when the
        caller's wait ends without an outcome; ``once``: submitted with a caller-chosen id."""
        self.id = request_id
        self.queue = queue
        self.once = once
        self._core = core
        self._cancel = cancel
        self._gone = gone
        self._ct = core.content_type
        self.submitted_at = 0.0  # time.monotonic() at submit, stamped when metrics are on
        # The chunks of a streaming request, made on the first chunk or stream() call.
        self._feed: ChunkFeed | None = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "waiting"
        return f"<{type(self).__name__} {self.queue}/{self.id} {state}>"

    def done(self) -> bool:
        raise NotImplementedError

    def _resolve(self, outcome: Outcome) -> None:
        """Its outcome arrived (called once: the producer takes it off its waiting list)."""
        raise NotImplementedError

    def _fail(self, error: Exception) -> None:
        raise NotImplementedError

    def _left(self, cancelled: bool) -> None:
        if self._gone is not None and not self.done():
            self._gone([self], cancelled=cancelled)

    def _chunk_value(self, item: Chunk | Restarted) -> Any:
        """A chunk's value; StreamRestarted for a restart to announce."""
        if isinstance(item, Restarted):
            raise StreamRestarted(self.id, item.attempt)
        return self._core.value(Outcome(self.id, OK, item.body), self._ct)

    def _timeout(self, wait: float | None, timeout: float | None) -> ResultTimeout:
        """The caller's ResultTimeout (its ``timeout`` in the message)."""
        return ResultTimeout(self.id, (wait if timeout is None else timeout) or 0.0)


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


class Handle(BaseHandle):
    """A request of ``Producer``; ``result()`` waits for its outcome."""

    __slots__ = ("_error", "_latch", "_outcome")

    def __init__(
        self, core: ProducerCore, cancel: Callable[[str, list[str]], Any], queue: str,
        request_id: str, gone: GoneFn | None = None, once: bool = False, latch: Latch | None = None,
    ) -> None:  # fmt: skip
        """``latch`` is shared with the other handles of one ``map`` call."""
        BaseHandle.__init__(self, core, cancel, queue, request_id, gone, once)
        self._latch = latch if latch is not None else Latch(1)
        self._outcome: Outcome | None = None
        self._error: Exception | None = None

    def done(self) -> bool:
        return self._outcome is not None or self._error is not None

    def result(self, timeout: float | None = None) -> Any:
        """The handler's result; raises RequestFailed, RequestExpired, RequestDead,
        RequestCancelled, ProducerClosed, or ResultTimeout when ``timeout`` seconds pass
        (default: the producer's ``default_timeout``) whatever Redis does (with the
        producer's ``cancel_on_timeout``, the request is then cancelled in the background)."""
        return self._result(self._core.timeout(timeout))

    def _result(self, wait: float | None, timeout: float | None = None) -> Any:
        """``result`` waiting ``wait`` seconds, of a caller's ``timeout`` (for its message)."""
        if not self.done() and not self._latch.wait_one(self.done, wait):
            self._left(cancelled=False)  # cancelled with the producer's cancel_on_timeout
            raise self._timeout(wait, timeout)
        return self._value()

    def cancel(self) -> bool:
        """Cancel the request (see ``Producer.cancel``). False, and nothing sent, when its
        outcome has already arrived; raises ConnectionFailed if Redis cannot be reached."""
        if self.done():
            return False
        with self._latch.cond:
            if self._feed is not None:
                self._feed.cancelled = True  # no more chunks, only the outcome
        self._cancel(self.queue, [self.id])
        return True

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
        (ResultTimeout; with ``cancel_on_timeout`` the request is then cancelled)."""
        check_resume(resume)
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

    def _value(self) -> Any:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._core.value(self._outcome, self._ct)

    def _resolve(self, outcome: Outcome) -> None:
        """Called once (the producer takes the handle off its waiting list first)."""
        self._outcome = outcome
        self._latch.count_down()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._latch.count_down()


class AsyncHandle(BaseHandle):
    """A request of ``AsyncProducer``; ``await result()`` waits for its outcome."""

    __slots__ = ("_changed", "_future")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        # What a stream() waits on: made on the first chunk or stream() call.
        self._changed: asyncio.Event | None = None

    def done(self) -> bool:
        return self._future.done()

    async def result(self, timeout: float | None = None) -> Any:
        """Like ``Handle.result``. Cancelling the awaiting task (``asyncio.wait_for``, a
        TaskGroup, a disconnected HTTP client) cancels the request too, unless the producer
        was made with ``cancel_on_cancel=False``."""
        return await self._result(self._core.timeout(timeout))

    async def _result(self, wait: float | None, timeout: float | None = None) -> Any:
        outcome = await self._told(self._wait(wait, timeout))
        return self._core.value(outcome, self._ct)

    async def _told(self, waiting: Awaitable[T]) -> T:
        """What ``waiting`` gives; a wait that times out or whose task is cancelled tells
        the producer (``gone``), which cancels the request as its settings say."""
        try:
            return await waiting
        except ResultTimeout:
            self._left(cancelled=False)
            raise
        except asyncio.CancelledError:
            self._left(cancelled=True)
            raise

    async def cancel(self) -> bool:
        """Like ``Handle.cancel``."""
        if self.done():
            return False
        if self._feed is not None:
            self._feed.cancelled = True  # no more chunks, only the outcome
        cancelled: Awaitable[None] = self._cancel(self.queue, [self.id])
        await cancelled
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

    async def _wait(self, wait: float | None, timeout: float | None = None) -> Outcome:
        """The outcome within ``wait`` seconds, else ResultTimeout."""
        try:
            # shield: a timeout or cancellation of this wait must not cancel the future,
            # which other waiters (and a later call) still use. asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # future completes, and a cancelled caller then carries on.
            async with asyncio.timeout(wait):
                return await asyncio.shield(self._future)
        except TimeoutError:
            raise self._timeout(wait, timeout) from None

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


def gather(handles: list[Handle], gathered: Gathered, gone: GoneFn) -> list[Any]:
    """``map``'s results of ``handles``, which share one latch (one wait for all)."""
    if handles and not handles[0]._latch.wait_all(gathered.remaining()):
        waiting = [h for h in handles if not h.done()]
        if waiting:
            gone(waiting, cancelled=False)
            raise ResultTimeout(waiting[0].id, gathered.timeout or 0.0)
    for handle in handles:
        try:
            gathered.results.append(handle._value())
        except Exception as exc:
            gathered.failed(exc)
    return gathered.finish()


async def gather_async(handles: list[AsyncHandle], gathered: Gathered, gone: GoneFn) -> list[Any]:
    """``map``'s results of ``handles``; a timed-out or cancelled wait tells ``gone`` of the
    requests still waiting."""
    for handle in handles:
        try:
            outcome = await handle._wait(gathered.remaining())
        except ResultTimeout:
            gone([h for h in handles if not h.done()], cancelled=False)
            raise ResultTimeout(handle.id, gathered.timeout or 0.0) from None
        except asyncio.CancelledError:
            gone([h for h in handles if not h.done()], cancelled=True)
            raise
        try:
            gathered.results.append(handle._core.value(outcome, handle._ct))
        except Exception as exc:
            gathered.failed(exc)
    return gathered.finish()
