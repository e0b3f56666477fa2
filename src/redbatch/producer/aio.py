"""The asyncio producer: the same methods as ``Producer``, as coroutines.

An ``AsyncReplyListener`` (``producer.async_listener``) pops the producer's reply lists and
completes futures. No thread and no thread lock: everything runs on the loop. Redis outages
are ridden out as by ``Producer`` (see redbatch.producer.listener).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import redis
import redis.asyncio

from redbatch.cluster_client import connect_async_lazily, pool_options
from redbatch.connection import (
    AsyncClient,
    address,
    check_url,
    ping_async,
    redis_failure,
)
from redbatch.errors import (
    ConnectionFailed,
    MapQueueFull,
    ProducerClosed,
    QueueFull,
    RedisRefused,
    ResultNotFound,
    ResultTimeout,
    WrongEventLoop,
)
from redbatch.producer._core import (
    CANCEL_MARK,
    CANCEL_TTL_MS,
    DEFAULT_MAX_QUEUE_LEN,
    Gathered,
    ProducerCore,
    Submission,
    batches,
    by_queue,
    check_new_ids,
    on_shards,
)
from redbatch.producer.admission import Admissions, Deadline
from redbatch.producer.async_handle import AsyncHandle
from redbatch.producer.async_listener import AsyncReplyListener
from redbatch.producer.async_routing import AsyncRoutes
from redbatch.producer.background import AsyncBackgroundCancels
from redbatch.producer.chunk_feed import RAISE, check_resume
from redbatch.producer.chunk_reader import read_stream_async
from redbatch.protocol import codec
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import (
    DEFAULT_PRIORITY,
    check_priority,
    check_request_id,
)
from redbatch.protocol.scripts import Scripts

log = logging.getLogger(__name__)


class AsyncProducer:
    """asyncio twin of ``Producer``; use one per event loop."""

    def __init__(
        self,
        client: AsyncClient | None,
        *,
        namespace: str = "rb",
        content_type: str = codec.MSGPACK,
        max_payload_bytes: int = codec.DEFAULT_LIMITS.max_payload_bytes,
        max_queue_len: int = DEFAULT_MAX_QUEUE_LEN,
        cancel_on_timeout: bool = True,
        cancel_on_cancel: bool = True,
        name: str | None = None,
    ) -> None:
        """Does no I/O: the first operation connects (``connect`` to fail early).
        ``cancel_on_cancel``: a coroutine cancelled while it awaits ``result``, ``call`` or
        ``map`` cancels its unfinished requests in Redis (workers skip them)."""
        self._core = ProducerCore(
            namespace,
            content_type=content_type,
            max_payload_bytes=max_payload_bytes,
            max_queue_len=max_queue_len,
            cancel_on_timeout=cancel_on_timeout,
            cancel_on_cancel=cancel_on_cancel,
            name=name,
        )
        self._owns_client = False
        self._connector: Callable[[], Awaitable[AsyncClient]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admissions = Admissions(self._core.producer_id)
        self._background = AsyncBackgroundCancels()
        self._pending: dict[str, AsyncHandle] = {}
        self._closed = False
        if client is not None:
            self._attach(client)

    def _attach(self, client: AsyncClient) -> None:
        self._client = client
        self._scripts = Scripts(client)
        self._listener = AsyncReplyListener(client, self._core, self._pending)
        self._routes = AsyncRoutes(client, self._core, self._listener)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "rb",
        cluster: bool | None = None,
        max_connections: int | None = None,
        **options: Any,
    ) -> AsyncProducer:
        """Like ``Producer.from_url``, but no I/O here: the first operation (or ``connect``)
        asks the server whether it is a cluster and connects, on the event loop."""
        check_url(url)
        pool_options(max_connections, None)  # checked now, not at the first call
        producer = cls(None, namespace=namespace, **options)
        producer._owns_client = True
        name = producer._core.client_name("producer")
        producer._connector = lambda: connect_async_lazily(
            url, cluster=cluster, max_connections=max_connections, client_name=name
        )
        return producer

    async def connect(self) -> None:
        """Connect now (and check Redis answers): for apps that want to fail at start-up
        rather than at their first request. Raises ConnectionFailed."""
        await self._ready()
        await self.ping()

    async def _ready(self, deadline: Deadline | None = None) -> None:
        """Bind the producer to the running loop at first use and connect if not yet."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise WrongEventLoop(
                "this AsyncProducer was first used on another event loop; an AsyncProducer "
                "(and its connections) belongs to one loop: make one per event loop, e.g. in "
                "the app's lifespan"
            )
        if self._connector is None:
            return
        connector = self._connector
        remaining = None if deadline is None else deadline.remaining()
        try:
            async with asyncio.timeout(remaining):
                client = await connector()
        except TimeoutError:
            raise ConnectionFailed(
                f"cannot connect to Redis within {deadline.timeout if deadline else 0} s"
            ) from None
        if self._connector is connector:  # another task may have connected meanwhile
            self._connector = None
            self._attach(client)
        else:
            await client.aclose()

    @property
    def id(self) -> str:
        return self._core.producer_id

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise ConnectionFailed (one readable line) if Redis cannot be used."""
        await self._ready()
        await ping_async(self._client, address(self._client))

    async def submit(
        self,
        queue: str,
        payload: Any,
        *,
        id: str | None = None,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
        shard_key: str | bytes | None = None,
        stream: bool = False,
    ) -> AsyncHandle:
        """Like ``Producer.submit``."""
        return await self._submit(
            queue, payload, Deadline(timeout), id=id, cost=cost, priority=priority,
            shard_key=shard_key, stream=stream,
        )  # fmt: skip

    async def stream(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = None,
        resume: str = RAISE,
        **submit: Any,
    ) -> AsyncIterator[Any]:
        """Like ``Producer.stream``: ``async for chunk in producer.stream(...)``."""
        check_resume(resume)
        handle = await self.submit(queue, payload, timeout=timeout, stream=True, **submit)
        async for chunk in handle.stream(timeout, resume=resume):
            yield chunk

    async def _submit(
        self,
        queue: str,
        payload: Any,
        deadline: Deadline,
        *,
        id: str | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
        shard_key: str | bytes | None = None,
        stream: bool = False,
    ) -> AsyncHandle:
        await self._ready(deadline)
        sub = self._core.submission(
            queue, payload, request_id=id, timeout=deadline.timeout, cost=cost,
            priority=priority, stream=stream,
        )  # fmt: skip
        [sub] = on_shards([sub], await self._route_by(deadline, sub, queue, 1, shard_key), 1)
        [handle] = self._register([sub], once=id is not None)
        try:
            async with asyncio.timeout(deadline.remaining()):
                await self._admit([sub], deadline, once=id is not None)
        except (ConnectionFailed, RedisRefused, QueueFull):
            self._unregister([handle])
            raise
        except (TimeoutError, ResultTimeout):
            self._unregister([handle])
            self._timed_out([handle])
            raise ResultTimeout(handle.id, deadline.timeout or 0.0) from None
        except asyncio.CancelledError:
            self._unregister([handle])
            self._abandoned([handle])  # it may have been added
            raise
        return handle

    async def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
    ) -> Any:
        deadline = Deadline(timeout)
        handle = await self._submit(queue, payload, deadline, cost=cost, priority=priority)
        return await handle._result(deadline.remaining(), timeout)

    async def map(
        self,
        queue: str,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        chunk: int = 500,
        return_exceptions: bool = False,
        priority: str = DEFAULT_PRIORITY,
    ) -> list[Any]:
        """Like ``Producer.map``."""
        gathered = Gathered(timeout, return_exceptions)
        handles = await self._submit_many(queue, payloads, gathered.deadline, chunk, priority)
        if not handles:
            return []
        return await self._gather(handles, gathered)

    async def submit_many(
        self,
        queue: str,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        chunk: int = 500,
        priority: str = DEFAULT_PRIORITY,
        stream: bool = False,
    ) -> list[AsyncHandle]:
        """Like ``Producer.submit_many``."""
        return await self._submit_many(queue, payloads, Deadline(timeout), chunk, priority, stream)

    async def _submit_many(
        self,
        queue: str,
        payloads: Iterable[Any],
        deadline: Deadline,
        chunk: int,
        priority: str,
        stream: bool = False,
    ) -> list[AsyncHandle]:
        check_priority(priority)
        timeout = deadline.timeout
        subs = [
            self._core.submission(queue, p, timeout=timeout, priority=priority, stream=stream)
            for p in payloads
        ]
        rounds = batches(subs, chunk)
        if not subs:
            return []
        await self._ready(deadline)
        subs = on_shards(subs, await self._route_by(deadline, subs[0], queue, len(rounds)), chunk)
        rounds = batches(subs, chunk)
        handles = self._register(subs)
        for start, batch in rounds:
            try:
                async with asyncio.timeout(deadline.remaining()):
                    await self._admit(batch, deadline)
            except (ConnectionFailed, RedisRefused):
                self._unregister(handles[start:])
                raise
            except (TimeoutError, ResultTimeout):
                self._unregister(handles)
                self._timed_out(handles)
                raise ResultTimeout(batch[0].request_id, timeout or 0.0) from None
            except QueueFull as full:
                self._unregister(handles[start:])
                raise MapQueueFull(full, handles[:start]) from None
            except asyncio.CancelledError:
                self._unregister(handles)
                self._abandoned(handles)
                raise
        return handles

    async def cancel(self, queue: str, id: str) -> None:
        """Like ``Producer.cancel``."""
        await self._ready()
        for name in await self._routes.served(queue):
            await self._cancel_ids(name, [id])

    async def stream_from(
        self,
        queue: str,
        id: str,
        *,
        after: tuple[int, int] = (0, -1),
        timeout: float | None = None,
        resume: str = RAISE,
    ) -> AsyncIterator[Any]:
        """Like ``Producer.stream_from``."""
        await self._ready()
        reader = read_stream_async(self._client, self._core, queue, id, after, timeout, resume)
        async for chunk in reader:
            yield chunk

    async def get_result(self, queue: str, id: str) -> Any:
        """Like ``Producer.get_result``."""
        await self._ready()
        names = await self._routes.served(queue)
        keyspace = self._core.keyspace
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(keyspace.queue(name).result(check_request_id(id)))
            found: list[dict[bytes, bytes]] = await pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure(f"cannot read result {id} of queue {queue}", exc) from None
        fields = next((f for f in found if f), None)
        if not fields:
            raise ResultNotFound(queue, id)
        outcome, ct = outcome_from_result(id, fields)
        return self._core.value(outcome, ct)

    async def close(self) -> None:
        if self._closed:
            return
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            await self._ready()  # raises WrongEventLoop
        self._closed = True
        pending = list(self._pending.values())
        self._pending.clear()  # the listener's dict too: it resolves nothing more
        connected = self._connector is None
        self._connector = None
        if connected:
            await self._listener.stop()
        await self._background.stop()
        for handle in pending:
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
        if self._owns_client and connected:
            await self._client.aclose()

    def _register(self, subs: list[Submission], once: bool = False) -> list[AsyncHandle]:
        if self._closed:
            raise ProducerClosed("producer is closed")
        ct, core, cancel, gone = self._core.content_type, self._core, self._cancel_ids, self._gone
        handles = [AsyncHandle(core, cancel, s.queue, s.request_id, ct, gone, once) for s in subs]
        check_new_ids(self._pending, [h.id for h in handles])
        for handle in handles:
            self._pending[handle.id] = handle
        return handles

    async def _admit(
        self, subs: list[Submission], deadline: Deadline, *, once: bool = False
    ) -> None:
        """Like ``Producer._admit``; the caller bounds it by ``deadline`` (asyncio.timeout)."""
        queue = subs[0].queue
        admission = self._admissions.open()
        name, keys, args = self._core.admission(subs, once=once, admission=admission)
        script = getattr(self._scripts, name)
        try:
            reply = await script(keys=keys, args=args)
        except redis.RedisError as exc:
            if deadline.passed():
                raise ResultTimeout(subs[0].request_id, deadline.timeout or 0.0) from None
            raise redis_failure(f"cannot submit to queue {queue}", exc) from None
        finally:
            self._admissions.close(admission)
        full = self._core.refusal(queue, reply, subs[0].priority)
        if full is not None:
            raise full

    async def _cancel_ids(self, queue: str, ids: list[str]) -> None:
        keys = self._core.cancel_keys(queue, ids)
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, CANCEL_MARK, px=CANCEL_TTL_MS)
            await pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure(f"cannot cancel requests of queue {queue}", exc) from None

    def _timed_out(self, handles: list[AsyncHandle]) -> None:
        """Like ``Producer._timed_out``: the cancels go in a task."""
        self._gone(handles, cancelled=False)

    def _abandoned(self, handles: list[AsyncHandle]) -> None:
        """The caller's task was cancelled while it waited for ``handles``."""
        self._gone(handles, cancelled=True)

    def _gone(self, handles: list[AsyncHandle], *, cancelled: bool) -> None:
        """Nobody waits for ``handles`` any more (a timeout, or the waiting task cancelled):
        with the producer's matching setting, their requests are cancelled, in a task."""
        wanted = self._core.cancel_on_cancel if cancelled else self._core.cancel_on_timeout
        if wanted and not self._closed:
            self._background.submit(lambda: self._cancel_timed_out(handles))

    async def _cancel_timed_out(self, handles: list[AsyncHandle]) -> None:
        """Like ``Producer._cancel_timed_out``: skipped while Redis is known to be down."""
        if self._listener.outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(handles))
            return
        for queue, ids in by_queue([h for h in handles if not h.once]).items():  # per shard
            await self._cancel_ids(queue, ids)
        for handle in handles:
            if handle.once:
                keys, args = self._core.leave_call(handle.queue, handle.id)
                try:
                    await self._scripts.leave(keys=keys, args=args)
                except redis.RedisError as exc:
                    raise redis_failure(f"cannot cancel request {handle.id}", exc) from None

    async def _gather(self, handles: list[AsyncHandle], gathered: Gathered) -> list[Any]:
        for handle in handles:
            try:
                outcome = await handle._wait(gathered.remaining())
            except ResultTimeout:
                self._timed_out([h for h in handles if not h.done()])
                raise ResultTimeout(handle.id, gathered.timeout or 0.0) from None
            except asyncio.CancelledError:
                self._abandoned([h for h in handles if not h.done()])
                raise
            try:
                gathered.results.append(self._core.value(outcome, handle._ct))
            except Exception as exc:
                gathered.failed(exc)
        return gathered.finish()

    def _unregister(self, handles: list[AsyncHandle]) -> None:
        for handle in handles:
            self._pending.pop(handle.id, None)

    async def _route_by(
        self,
        deadline: Deadline,
        first: Submission,
        queue: str,
        count: int,
        shard_key: str | bytes | None = None,
    ) -> list[str]:
        """``_route`` within ``deadline`` (then ResultTimeout naming ``first``)."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await self._routes.route(queue, count, shard_key)
        except TimeoutError:
            raise ResultTimeout(first.request_id, deadline.timeout or 0.0) from None
