"""The asyncio producer: a thin shell that runs the producer's flows (``engine``) on the
event loop, and its reply listener as tasks (``listener``). No thread: everything runs on
the loop the producer first ran on. It does no I/O until its first operation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from redbatch.producer import options as opt
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Deadline
from redbatch.producer.engine import Engine
from redbatch.producer.entries import Submission
from redbatch.producer.gather import gather_async
from redbatch.producer.handle import AsyncHandle
from redbatch.producer.listener import Listening, TaskListener
from redbatch.producer.oneloop import OneLoop, connector
from redbatch.producer.overdue import AsyncOverdue
from redbatch.producer.plans import Flow, Steps
from redbatch.producer.requests import Gathered
from redbatch.producer.runners import run_async
from redbatch.producer.stream_calls import AsyncStreams
from redbatch.protocol.scripts import Scripts
from redbatch.transport.connection import AsyncClient, address, ping_async
from redbatch.transport.topology import ONE_NODE, topology_of

if TYPE_CHECKING:
    from typing_extensions import Unpack


T = TypeVar("T")


class AsyncProducer(AsyncStreams):
    """``Producer``'s methods as coroutines; one per event loop. ``cancel_on_cancel``: a
    task cancelled while it awaits ``result``, ``call`` or ``map`` cancels its requests."""

    def __init__(self, client: AsyncClient | None, **options: Unpack[opt.ProducerOptions]) -> None:
        """No I/O here: the first operation connects (``connect`` to fail at start-up)."""
        self._core = ProducerCore(**opt.client_options(options))
        self._owns_client = False
        self._one_loop = OneLoop()
        self._listening = Listening(self._core, threading.Condition(), {}, ONE_NODE)
        self._engine: Engine[AsyncHandle] = Engine(self._core, self._listening, self._handles)
        self._overdue = AsyncOverdue(self._engine, self._drive)
        if client is not None:
            self._attach(client)

    def _attach(self, client: AsyncClient) -> None:
        self._client = client
        self._scripts = Scripts(client)
        self._listening.topology = topology_of(client)
        self._listener = TaskListener(client, self._listening)
        self._engine.listen = self._listener.add

    @classmethod
    def from_url(cls, url: str, **options: Unpack[opt.UrlOptions]) -> AsyncProducer:
        """Like ``Producer.from_url``, but no I/O here: the first operation (or ``connect``)
        asks the server whether it is a cluster and connects, on the event loop."""
        rest, pool = opt.url_options(options)
        producer = cls(None, **rest)
        producer._owns_client = True
        producer._one_loop.connector = connector(url, pool, producer._core.client_name("producer"))
        return producer

    @property
    def id(self) -> str:
        return self._core.producer_id

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise ConnectionFailed (one readable line) if Redis cannot be used. Connects first
        if not yet: ``connect`` is the same, for apps that want to fail at start-up."""
        await self._ready()
        await ping_async(self._client, address(self._client))

    connect = ping

    async def submit(
        self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]
    ) -> AsyncHandle:
        """Like ``Producer.submit``."""
        deadline = Deadline(self._core.timeout(options.get("timeout")))
        return await self._submit(queue, payload, deadline, options)

    async def _submit(
        self, queue: str, payload: Any, deadline: Deadline, options: opt.SubmitOptions
    ) -> AsyncHandle:
        await self._ready(deadline)
        return (await self._overdue.within(deadline, self._engine.one(queue, payload, options, deadline)))[0]  # fmt: skip  # noqa: E501

    async def call(self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]) -> Any:
        """Like ``Producer.call``."""
        deadline = Deadline(self._core.timeout(options.get("timeout")))
        handle = await self._submit(queue, payload, deadline, options)
        return await handle._result(deadline.remaining(), deadline.timeout)

    async def map(
        self,
        queue: str,
        payloads: Iterable[Any],
        **options: Unpack[opt.MapOptions],
    ) -> list[Any]:
        """Like ``Producer.map``."""
        gathered = Gathered.of(self._core.timeout(options.get("timeout")), options)
        handles = await self._submit_many(queue, payloads, gathered.deadline, options)
        return await gather_async(handles, gathered, self._overdue.gone)

    async def submit_many(
        self, queue: str, payloads: Iterable[Any], **options: Unpack[opt.ManyOptions]
    ) -> list[AsyncHandle]:
        """Like ``Producer.submit_many``."""
        deadline = Deadline(self._core.timeout(options.get("timeout")))
        return await self._submit_many(queue, payloads, deadline, options)

    async def _submit_many(
        self, queue: str, payloads: Iterable[Any], deadline: Deadline, options: opt.ManyOptions
    ) -> list[AsyncHandle]:
        batch = self._engine.many(queue, payloads, options, deadline)
        if batch is None:
            return []
        await self._ready(deadline)
        return await self._overdue.within(deadline, batch)

    async def cancel(self, queue: str, id: str) -> None:
        """Like ``Producer.cancel``."""
        await self._ready()
        await self._drive(self._engine.cancel(queue, [id]))

    async def get_result(self, queue: str, id: str) -> Any:
        """Like ``Producer.get_result``."""
        await self._ready()
        return await self._drive(self._engine.get_result(queue, id))

    async def close(self) -> None:
        if self._engine.closed:
            return
        used = self._one_loop.loop is not None
        if used:
            self._one_loop.check()  # WrongEventLoop on another loop
        self._engine.close()
        connected = used and self._one_loop.connected
        self._one_loop.connector = None  # no connecting any more
        if connected:
            await self._listener.stop()
        await self._overdue.stop()
        if self._owns_client and connected:
            await self._client.aclose()

    async def _ready(self, deadline: Deadline | None = None) -> None:
        """Bind the producer to the running loop at first use, and connect if not yet."""
        client = await self._one_loop.connect(deadline)
        if client is not None:
            self._attach(client)

    async def _drive(self, flow: Flow[T]) -> T:
        steps = Steps(flow)
        for plan in steps:
            await steps.settle_async(run_async(self._client, plan, self._scripts))
        return steps.value

    def _handles(self, subs: list[Submission], once: bool) -> list[AsyncHandle]:
        core, cancel, gone = self._core, self._cancel_ids, self._overdue.gone
        return [
            AsyncHandle(core, cancel, s.queue, s.request_id, gone, once, s.streaming) for s in subs
        ]

    async def _cancel_ids(self, queue: str, ids: list[str]) -> None:
        await self._drive(self._engine.cancel_here(queue, ids))
