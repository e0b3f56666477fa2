"""Drives a streaming (generator) handler through one batch. No Redis here: each step's
chunks go to ``publish``, which sends them and answers which requests were cancelled.

A step is a list aligned with the batch the handler got: per item ``None`` (nothing new), a
chunk, or ``Final(value)`` (the item ends with ``value``). An item cancelled meanwhile (the
answer of a step's publish: one cancel check per step for the whole batch) gets no more
chunks and ends ``cancelled``; its batchmates go on. When every item has ended or was
cancelled the generator is closed: nobody waits for more.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableSet
from dataclasses import dataclass, field
from typing import Any, Protocol

from redbatch.errors import PayloadError
from redbatch.final import Final
from redbatch.protocol import codec
from redbatch.protocol.chunks import Chunk, StepChunk
from redbatch.protocol.fields import Request

log = logging.getLogger(__name__)


class Publish(Protocol):
    """Sends a batch's steps: each call takes (the ids of the requests still running, plus
    those whose end mark the step carries; the step's chunks) and answers the ids found
    cancelled, by this step's check or an earlier one whose answer came in since (the
    worker's publisher sends a step while the generator computes the next). ``flush`` waits
    for every step sent and answers the cancels not yet told."""

    def __call__(self, running: list[str], chunks: list[StepChunk]) -> set[str]: ...

    def flush(self) -> set[str]: ...


class PublishNothing:
    """For an executor used without Redis (tests, benchmarks): chunks go nowhere."""

    def __call__(self, running: list[str], chunks: list[StepChunk]) -> set[str]:
        return set()

    def flush(self) -> set[str]:
        return set()


publish_nothing = PublishNothing()


# What an item ends with: (kind, value) as the executor's _isolated answers, plus
# ("cancelled", text) for an item cancelled while it ran.
CANCELLED_KIND = "cancelled"


@dataclass
class _Item:
    request: Request
    chunks: list[Any] = field(default_factory=list)
    end: tuple[str, Any] | None = None  # set once the item has ended


class StreamRun:
    """One batch's generator, stepped to its end."""

    def __init__(
        self,
        requests: list[Request],
        publish: Publish,
        cancelled: MutableSet[str],
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        *,
        encoder: codec.Encoder | None = None,
    ) -> None:
        self._items = [_Item(r) for r in requests]
        self._publish = publish
        # Shared with the handler's request infos: adding an id makes cancelled() true.
        self._cancelled = cancelled
        self._limits = limits
        self._encoder = encoder

    def run(
        self,
        stream: Iterator[Any] | AsyncIterator[Any],
        run_async: Callable[[Awaitable[Any]], Any],
        retry_on: tuple[type[BaseException], ...],
        error_text: Callable[[BaseException], str],
    ) -> list[tuple[str, Any]]:
        """Step ``stream`` to its end (an async generator through ``run_async``, the handler
        thread's loop); one (kind, value)
        per item. An exception ends every item still running with it (``retry_on`` ones as
        a retry): chunks already went out, so there is no bisecting a stream."""
        try:
            if isinstance(stream, AsyncIterator):
                run_async(self._run_async(stream))
            else:
                self._run_sync(stream)
        except retry_on as exc:
            delay = getattr(exc, "delay", None)
            self._end_running(("retry", (delay, error_text(exc))))
        except Exception as exc:
            log.debug("streaming handler raised: %s", exc, extra={"event": "stream_handler_raised"})
            self._end_running(("error", error_text(exc)))
        self._cancel_found(self._publish.flush())
        return [item.end or ("ok", item.chunks) for item in self._items]

    def _run_sync(self, stream: Iterator[Any]) -> None:
        try:
            for step in stream:
                if not self.step(step):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    async def _run_async(self, stream: AsyncIterator[Any]) -> None:
        try:
            async for step in stream:
                if not self.step(step):
                    break
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def step(self, values: Any) -> bool:
        """Take one step's values; False once no item runs any more."""
        if not isinstance(values, list | tuple) or len(values) != len(self._items):
            got = len(values) if isinstance(values, list | tuple) else type(values).__name__
            raise HandlerContractError(
                f"a streaming handler's step had {got} values for "
                f"{len(self._items)} payloads (yield a list of the same length, in the same "
                "order: None, a chunk, or Final(value) per item)"
            )
        sent: list[tuple[_Item, Chunk]] = []
        for item, value in zip(self._items, values, strict=True):
            if item.end is None and value is not None:
                chunk = self._take(item, value)
                if chunk is not None:
                    sent.append((item, chunk))
        running = [item for item in self._items if item.end is None]
        # End marks go with the running requests' cancel checks: their items are listed
        # after those (checked too, harmlessly: they ended).
        ended = [item for item, chunk in sent if chunk.end]
        checked = running + ended
        if running or sent:
            position = {id(item): at for at, item in enumerate(checked)}
            out = [
                StepChunk(position[id(item)], item.request.id, item.request.reply, chunk)
                for item, chunk in sent
            ]
            self._cancel_found(self._publish([item.request.id for item in checked], out))
        return any(item.end is None for item in self._items)

    def _take(self, item: _Item, value: Any) -> Chunk | None:
        """Record one item's value; the chunk to send if its producer streams it."""
        request = item.request
        if isinstance(value, Final):
            item.end = ("ok", value.value)
            # The end mark: its producer's stream ends now, not when the batch does.
            return (
                Chunk(request.id, request.attempt, len(item.chunks), b"", True)
                if request.stream
                else None
            )
        item.chunks.append(value)
        if not request.stream:
            return None
        try:
            body = codec.encode(value, request.ct, self._limits, encoder=self._encoder)
        except PayloadError as exc:
            item.end = ("error", f"PayloadError: chunk: {exc}")
            return None
        return Chunk(request.id, request.attempt, len(item.chunks) - 1, body)

    def _cancel_found(self, gone: set[str]) -> None:
        """End cancelled the items found cancelled: also one that ended ok meanwhile (the
        check that saw the cancel ran while it was still running, or with its end mark),
        since nobody takes its result any more."""
        for item in self._items:
            if item.request.id in gone and (item.end is None or item.end[0] == "ok"):
                self._cancelled.add(item.request.id)
                item.end = (CANCELLED_KIND, "cancelled while it ran")

    def _end_running(self, end: tuple[str, Any]) -> None:
        for item in self._items:
            if item.end is None:
                item.end = end


class HandlerContractError(Exception):
    """A streaming handler's step is not a list aligned with the batch."""
