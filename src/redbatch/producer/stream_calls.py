"""The producers' streaming calls (``stream``, ``stream_from``), one mixin per shell, kept
out of ``sync``/``aio`` so those stay thin: they only submit and read through the shell."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from redbatch.producer import options as opt
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Deadline
from redbatch.producer.chunk_feed import RAISE, check_resume
from redbatch.producer.chunk_reader import read_stream, read_stream_async, reading
from redbatch.producer.handle import AsyncHandle, Handle
from redbatch.transport.connection import AsyncClient, Client

if TYPE_CHECKING:
    from typing_extensions import Unpack


class _Shell(Protocol):
    _core: ProducerCore
    _client: Client

    def submit(self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]) -> Handle: ...


class _AsyncShell(Protocol):
    _core: ProducerCore
    _client: AsyncClient

    async def submit(
        self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]
    ) -> AsyncHandle: ...

    async def _ready(self, deadline: Deadline | None = None) -> None: ...


class Streams:
    """``Producer``'s streaming calls."""

    def stream(
        self: _Shell, queue: str, payload: Any, *, resume: str = RAISE,
        **options: Unpack[opt.SubmitOptions],
    ) -> Iterator[Any]:  # fmt: skip
        """``submit(..., stream=True)`` then ``handle.stream(timeout, resume=resume)``: yields
        the request's chunks as a streaming handler makes them."""
        check_resume(resume)
        options["stream"] = True
        handle = self.submit(queue, payload, **options)
        return handle.stream(options.get("timeout"), resume=resume)

    def stream_from(
        self: _Shell, queue: str, id: str, **options: Unpack[opt.FromOptions]
    ) -> Iterator[Any]:
        """Read request ``id``'s chunks from where a reader left off (``after``: the
        ``handle.position`` it had), from this or any process, out of the kept chunks, then
        end with its outcome as ``stream()`` does. For a producer that reconnects mid-stream.
        """
        return read_stream(self._client, reading(self._core, queue, id, *opt.from_args(options)))


class AsyncStreams:
    """``AsyncProducer``'s streaming calls, as async iterators."""

    async def stream(
        self: _AsyncShell, queue: str, payload: Any, *, resume: str = RAISE,
        **options: Unpack[opt.SubmitOptions],
    ) -> AsyncIterator[Any]:  # fmt: skip
        """Like ``Producer.stream``: ``async for chunk in producer.stream(...)``."""
        check_resume(resume)
        options["stream"] = True
        handle = await self.submit(queue, payload, **options)
        async for chunk in handle.stream(options.get("timeout"), resume=resume):
            yield chunk

    async def stream_from(
        self: _AsyncShell, queue: str, id: str, **options: Unpack[opt.FromOptions]
    ) -> AsyncIterator[Any]:
        """Like ``Producer.stream_from``."""
        await self._ready()
        flow = reading(self._core, queue, id, *opt.from_args(options))
        async for chunk in read_stream_async(self._client, flow):
            yield chunk
