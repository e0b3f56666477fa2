"""Handles on submitted requests: ``Handle`` (threads wait on a latch) and ``AsyncHandle``
(tasks await a future). What they share lives in ``BaseHandle`` (``base_handle``), their
streams in ``streaming``; a subclass adds only how a caller waits for the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redbatch.errors import ResultTimeout
from redbatch.producer._core import ProducerCore
from redbatch.producer.base_handle import BaseHandle, GoneFn
from redbatch.producer.latch import Latch
from redbatch.producer.streaming import TaskStream, ThreadStream
from redbatch.protocol.fields import Outcome

T = TypeVar("T")

__all__ = ["AsyncHandle", "BaseHandle", "GoneFn", "Handle"]


class Handle(ThreadStream):
    """A request of ``Producer``; ``result()`` waits for its outcome."""

    __slots__ = ("_error", "_latch", "_outcome")

    def __init__(
        self, core: ProducerCore, cancel: Callable[[str, list[str]], Any], queue: str,
        request_id: str, gone: GoneFn | None = None, once: bool = False,
        streaming: bool = False, latch: Latch | None = None,
    ) -> None:  # fmt: skip
        """``latch`` is shared with the other handles of one ``map`` call."""
        BaseHandle.__init__(self, core, cancel, queue, request_id, gone, once, streaming)
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


class AsyncHandle(TaskStream):
    """A request of ``AsyncProducer``; ``await result()`` waits for its outcome."""

    __slots__ = ("_future",)

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
        self._check_loop()
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

    def add_done_callback(self, fn: Callable[[AsyncHandle], object]) -> None:
        """Call ``fn(handle)`` on the producer's event loop once the outcome is in (soon,
        when it already is); ``result_nowait()`` then gives it. For code that follows many
        requests without a task each (``redbatch bench``): a task and a timeout per request
        cost more CPU than redbatch spends carrying the request."""
        self._future.add_done_callback(lambda _: fn(self))

    def result_nowait(self) -> Any:
        """The result once ``done()``: the handler's value, or the request's error raised
        (as ``result`` would); ``asyncio.InvalidStateError`` while it is still running."""
        if not self._future.done():
            raise asyncio.InvalidStateError(f"request {self.id} has no outcome yet")
        return self._core.value(self._future.result(), self._ct)

    def abandon(self) -> None:
        """Stop following a request that has no outcome yet, as a ``result`` wait that
        timed out does: with the producer's ``cancel_on_timeout`` it is cancelled in the
        background. Nothing happens once ``done()``."""
        self._left(cancelled=False)

    async def cancel(self) -> bool:
        """Like ``Handle.cancel``."""
        if self.done():
            return False
        self._check_loop()
        if self._feed is not None:
            self._feed.cancelled = True  # no more chunks, only the outcome
        cancelled: Awaitable[None] = self._cancel(self.queue, [self.id])
        await cancelled
        return True

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
