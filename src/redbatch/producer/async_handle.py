"""The asyncio handle: an ``AsyncProducer`` request's future outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redbatch.errors import ResultTimeout
from redbatch.producer._core import ProducerCore
from redbatch.protocol.fields import Outcome

# Sets the cancel keys of (queue, request ids); raises ConnectionFailed.
CancelFn = Callable[[str, list[str]], Awaitable[None]]


# Takes note that nobody waits for these handles any more: their local wait timed out, or
# (``cancelled``) the waiting task was cancelled. Returns at once: any cancel goes to Redis
# in a task.
class GoneFn(Protocol):
    def __call__(self, handles: list[AsyncHandle], *, cancelled: bool) -> None: ...


class AsyncHandle:
    """A submitted request; ``await result()`` waits for its outcome."""

    __slots__ = ("_cancel", "_core", "_ct", "_future", "_gone", "id", "once", "queue")

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
        await self._cancel(self.queue, [self.id])
        return True

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

    def _fail(self, error: Exception) -> None:
        if not self._future.done():
            self._future.set_exception(error)
            # Mark retrieved: nobody may ever await a handle the caller dropped.
            self._future.exception()
