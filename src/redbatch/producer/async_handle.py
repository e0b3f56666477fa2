"""The asyncio handle: an ``AsyncProducer`` request's future outcome."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redbatch.errors import ConnectionFailed, ResultTimeout
from redbatch.producer._core import ProducerCore
from redbatch.protocol.fields import Outcome

log = logging.getLogger(__name__)

# Sets the cancel keys of (queue, request ids); raises ConnectionFailed.
CancelFn = Callable[[str, list[str]], Awaitable[None]]


class AsyncHandle:
    """A submitted request; ``await result()`` waits for its outcome."""

    __slots__ = ("_cancel", "_core", "_ct", "_future", "_timed_out", "id", "queue")

    def __init__(
        self,
        core: ProducerCore,
        cancel: CancelFn,
        queue: str,
        request_id: str,
        ct: str,
        timed_out: CancelFn | None = None,
    ) -> None:
        """``timed_out`` cancels after a local timeout (``cancel`` when not given)."""
        self.id = request_id
        self.queue = queue
        self._core = core
        self._cancel = cancel
        self._timed_out = timed_out or cancel
        self._ct = ct
        self._future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<AsyncHandle {self.queue}/{self.id} {'done' if self.done() else 'waiting'}>"

    def done(self) -> bool:
        return self._future.done()

    async def result(self, timeout: float | None = None) -> Any:
        """Like ``Handle.result`` (a timeout cancels the request with the producer's
        ``cancel_on_timeout``); cancelling the wait itself leaves the request alone."""
        try:
            outcome = await self._wait(timeout)
        except ResultTimeout:
            if self._core.cancel_on_timeout:
                await cancel_quietly(self._timed_out, self.queue, [self.id])
            raise
        return self._core.value(outcome, self._ct)

    async def cancel(self) -> bool:
        """Like ``Handle.cancel``."""
        if self.done():
            return False
        await self._cancel(self.queue, [self.id])
        return True

    async def _wait(self, timeout: float | None) -> Outcome:
        try:
            # shield: a timeout or cancellation of this wait must not cancel the future,
            # which other waiters (and a later call) still use. asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as the
            # future completes, and a cancelled caller then carries on.
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._future)
        except TimeoutError:
            raise ResultTimeout(self.id, timeout or 0.0) from None

    def _resolve(self, outcome: Outcome) -> None:
        if not self._future.done():
            self._future.set_result(outcome)

    def _fail(self, error: Exception) -> None:
        if not self._future.done():
            self._future.set_exception(error)
            # Mark retrieved: nobody may ever await a handle the caller dropped.
            self._future.exception()


async def cancel_quietly(cancel: CancelFn, queue: str, ids: list[str]) -> None:
    """cancel_on_timeout is best effort: the caller gets its ResultTimeout either way."""
    if not ids:
        return
    try:
        await cancel(queue, ids)
    except ConnectionFailed as exc:
        log.warning("could not cancel %d timed-out request(s): %s", len(ids), exc)
