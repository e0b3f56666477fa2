"""What a producer does for a caller whose deadline passes (or, asyncio, whose task is
cancelled). Sync: its admission runs on a daemon thread the caller waits on for the time it
has left (connecting and redis-py's retries included), and the cancels it implies go from a
background thread. Asyncio: the same with ``asyncio.timeout`` and tasks. The caller's
ResultTimeout is raised at its deadline, whatever Redis or the network does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from redbatch.errors import ProducerClosed, ResultTimeout
from redbatch.producer.admission import Deadline
from redbatch.producer.background import AsyncBackgroundCancels, BackgroundCancels, DaemonPool
from redbatch.producer.engine import Batch, Engine
from redbatch.producer.handle import AsyncHandle, Handle
from redbatch.producer.plans import Flow

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overdue:
    """The threads of one producer's bounded waits: ``drive`` runs a flow (with the
    deadline, ``time.monotonic``, that bounds each Redis call)."""

    def __init__(
        self,
        engine: Engine[Handle],
        drive: Callable[[Flow[Any], float | None], Any],
        size: int,
    ) -> None:
        self._engine = engine
        self._drive = drive
        tag = engine.core.producer_id[:9]
        self._background = BackgroundCancels(f"redbatch-cancels-{tag}")
        self._io = DaemonPool(f"redbatch-admit-{tag}", size)

    def stop(self) -> None:
        self._background.stop()
        self._io.stop()

    def within(self, deadline: Deadline, batch: Batch[Handle]) -> list[Handle]:
        """Run ``batch``'s flow (route, register, admit) by the caller's ``deadline``: on a
        thread of ``_io`` whose future the caller waits on, so connecting and retrying count
        too. At the deadline: ResultTimeout now, and once the flow ends its handles are
        dropped and, with ``cancel_on_timeout``, its requests cancelled (they may have been
        added)."""
        if self._engine.closed:
            raise ProducerClosed("producer is closed")
        if deadline.at is None:
            handles: list[Handle] = self._drive(batch.flow, None)
            return handles
        future = self._io.submit(lambda: self._drive(batch.flow, deadline.at))
        try:
            handles = future.result(deadline.remaining())
        except (FutureTimeout, ResultTimeout):
            future.add_done_callback(lambda _: self._abandon(batch))
            raise ResultTimeout(batch.subs[0].request_id, deadline.timeout or 0.0) from None
        return handles

    def _abandon(self, batch: Batch[Handle]) -> None:
        self._engine.forget(batch)
        if self._engine.wants_cancel(cancelled=False):
            self._background.submit(lambda: self._drive(self._engine.abandon(batch), None))

    def gone(self, handles: list[Handle], *, cancelled: bool) -> None:
        """The caller's wait for ``handles`` timed out: with ``cancel_on_timeout`` the
        cancels go from a background thread, so its ResultTimeout is raised at its timeout
        whatever Redis does."""
        if self._engine.wants_cancel(cancelled):
            self._background.submit(lambda: self._drive(self._engine.gone(handles), None))


class AsyncOverdue:
    """The tasks of one asyncio producer's ended waits; ``drive`` runs a flow."""

    def __init__(
        self, engine: Engine[AsyncHandle], drive: Callable[[Flow[Any]], Coroutine[Any, Any, Any]]
    ) -> None:
        self._engine = engine
        self._drive = drive
        self._background = AsyncBackgroundCancels()

    async def stop(self) -> None:
        await self._background.stop()

    async def within(self, deadline: Deadline, batch: Batch[AsyncHandle]) -> list[AsyncHandle]:
        """Run ``batch``'s flow by ``deadline`` (then ResultTimeout); a timed-out or
        cancelled admission is cancelled (it may have been added)."""
        if self._engine.closed:
            raise ProducerClosed("producer is closed")
        try:
            async with asyncio.timeout(deadline.remaining()):
                handles: list[AsyncHandle] = await self._drive(batch.flow)
                return handles
        except (TimeoutError, asyncio.CancelledError) as exc:
            self._engine.forget(batch)
            cancelled = not isinstance(exc, TimeoutError)
            if self._engine.wants_cancel(cancelled):
                self._background.submit(lambda: self._drive(self._engine.abandon(batch)))
            if cancelled:
                raise
            raise ResultTimeout(batch.subs[0].request_id, deadline.timeout or 0.0) from None

    def gone(self, handles: list[AsyncHandle], *, cancelled: bool) -> None:
        """Nobody waits for ``handles`` any more: their requests are cancelled, in a task,
        with the producer's ``cancel_on_timeout`` / ``cancel_on_cancel``."""
        if self._engine.wants_cancel(cancelled):
            self._background.submit(lambda: self._drive(self._engine.gone(handles)))
