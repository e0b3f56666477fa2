"""The asyncio producer: the same methods as ``Producer``, as coroutines.

One listener task per producer pops the producer's reply lists (blocking, on a connection of
its own) and completes futures. No thread and no thread lock: everything runs on the loop.
Redis outages are ridden out as by ``Producer`` (see redbatch.producer.sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import redis
import redis.asyncio

from redbatch.connection import (
    address,
    backoff_retry_async,
    clone_kwargs,
    connect_async,
    ping_async,
)
from redbatch.errors import (
    ConnectionFailed,
    MapQueueFull,
    ProducerClosed,
    QueueFull,
    ResultNotFound,
    ResultTimeout,
)
from redbatch.producer._core import (
    CANCEL_MARK,
    CANCEL_TTL_MS,
    DEFAULT_MAX_QUEUE_LEN,
    LISTEN_RETRIES,
    LISTEN_SOCKET_TIMEOUT_S,
    LISTEN_TIMEOUT_S,
    RECOVER_BATCH,
    REPLY_BATCH,
    WAKE,
    WAKE_TTL_MS,
    Gathered,
    Outage,
    ProducerCore,
    Submission,
    batches,
    check_new_ids,
    read_replies,
    stored_outcome,
)
from redbatch.producer.async_handle import AsyncHandle, cancel_quietly
from redbatch.protocol import codec
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import DEFAULT_PRIORITY, check_priority, check_queue_name
from redbatch.protocol.scripts import Scripts
from redbatch.protocol.streams import ensure_queue_async

log = logging.getLogger(__name__)


class AsyncProducer:
    """asyncio twin of ``Producer``; use one per event loop."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        namespace: str = "rb",
        content_type: str = codec.MSGPACK,
        max_payload_bytes: int = codec.DEFAULT_LIMITS.max_payload_bytes,
        max_queue_len: int = DEFAULT_MAX_QUEUE_LEN,
        cancel_on_timeout: bool = True,
    ) -> None:
        self._client = client
        self._owns_client = False
        self._core = ProducerCore(
            namespace,
            content_type=content_type,
            max_payload_bytes=max_payload_bytes,
            max_queue_len=max_queue_len,
            cancel_on_timeout=cancel_on_timeout,
        )
        self._scripts = Scripts(client)
        pool = client.connection_pool
        self._listen_client = redis.asyncio.Redis(
            connection_pool=redis.asyncio.ConnectionPool(
                connection_class=pool.connection_class,
                max_connections=1,
                retry=backoff_retry_async(LISTEN_RETRIES),
                **clone_kwargs(client, socket_timeout=LISTEN_SOCKET_TIMEOUT_S),
            )
        )
        self._outage = Outage()  # the listener's; read by the timeout path
        self._pending: dict[str, AsyncHandle] = {}
        self._reply_keys: dict[str, str] = {}
        self._keys_changed = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "rb", **options: Any) -> AsyncProducer:
        producer = cls(connect_async(url), namespace=namespace, **options)
        producer._owns_client = True
        return producer

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
    ) -> AsyncHandle:
        sub = self._core.submission(
            queue, payload, request_id=id, timeout=timeout, cost=cost, priority=priority
        )
        await self._use_queue(sub.queue)
        [handle] = self._register([sub])
        try:
            await self._admit([sub], once=id is not None)
        except (ConnectionFailed, QueueFull):
            self._unregister([handle])
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
        handle = await self.submit(queue, payload, timeout=timeout, cost=cost, priority=priority)
        return await handle.result(timeout)

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
        check_priority(priority)
        subs = [
            self._core.submission(queue, p, timeout=timeout, priority=priority) for p in payloads
        ]
        rounds = batches(subs, chunk)
        if not subs:
            return []
        await self._use_queue(subs[0].queue)
        handles = self._register(subs)
        for start, batch in rounds:
            try:
                await self._admit(batch)
            except ConnectionFailed:
                self._unregister(handles[start:])
                raise
            except QueueFull as full:
                self._unregister(handles[start:])
                raise MapQueueFull(full, handles[:start]) from None
        return await self._gather(handles, Gathered(timeout, return_exceptions))

    async def cancel(self, queue: str, id: str) -> None:
        """Like ``Producer.cancel``."""
        await self._cancel_ids(queue, [id])

    async def get_result(self, queue: str, id: str) -> Any:
        key = self._core.keyspace.queue(queue).result(id)
        try:
            fields: dict[bytes, bytes] = await self._client.hgetall(key)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot read result {id} of queue {queue}: {exc}") from None
        if not fields:
            raise ResultNotFound(queue, id)
        outcome, ct = outcome_from_result(id, fields)
        return self._core.value(outcome, ct)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, {}
        if self._task is not None:
            self._task.cancel()
            first_key = next(iter(self._reply_keys.values()), None)
            if first_key is not None:
                # On Python 3.11 the cancellation can be lost (asyncio.wait_for inside
                # redis-py swallows it when it lands as its inner await ends); the listener
                # then blocks in its pop for up to LISTEN_TIMEOUT_S. The marker ends that pop.
                await self._wake(first_key)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for handle in pending.values():
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
        # aclose() leaves a pool it was given alone: close the listener's connection here.
        await self._listen_client.connection_pool.disconnect()
        await self._listen_client.aclose()
        if self._owns_client:
            await self._client.aclose()

    def _register(self, subs: list[Submission]) -> list[AsyncHandle]:
        if self._closed:
            raise ProducerClosed("producer is closed")
        ct = self._core.content_type
        handles = [
            AsyncHandle(
                self._core, self._cancel_ids, s.queue, s.request_id, ct, self._cancel_timed_out
            )
            for s in subs
        ]
        check_new_ids(self._pending, [h.id for h in handles])
        for handle in handles:
            self._pending[handle.id] = handle
        return handles

    async def _admit(self, subs: list[Submission], *, once: bool = False) -> None:
        """One admission call: all of ``subs`` are added, or none (QueueFull). ``once``: a
        single request with a caller-chosen id, admitted idempotently (admit_once.lua)."""
        queue = subs[0].queue
        name, keys, args = self._core.admission(subs, once=once)
        script = getattr(self._scripts, name)
        try:
            reply = await script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot submit to queue {queue}: {exc}") from None
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
            raise ConnectionFailed(f"cannot cancel requests of queue {queue}: {exc}") from None

    async def _cancel_timed_out(self, queue: str, ids: list[str]) -> None:
        """Like ``Producer._cancel_timed_out``: skipped while Redis is known to be down."""
        if self._outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(ids))
            return
        await self._cancel_ids(queue, ids)

    async def _gather(self, handles: list[AsyncHandle], gathered: Gathered) -> list[Any]:
        for handle in handles:
            try:
                outcome = await handle._wait(gathered.remaining())
            except ResultTimeout:
                if self._core.cancel_on_timeout:
                    waiting = [h.id for h in handles if not h.done()]
                    await cancel_quietly(self._cancel_timed_out, handle.queue, waiting)
                raise ResultTimeout(handle.id, gathered.timeout or 0.0) from None
            try:
                gathered.results.append(self._core.value(outcome, handle._ct))
            except Exception as exc:
                gathered.failed(exc)
        return gathered.finish()

    def _unregister(self, handles: list[AsyncHandle]) -> None:
        for handle in handles:
            self._pending.pop(handle.id, None)

    async def _use_queue(self, queue: str) -> None:
        check_queue_name(queue)
        if queue in self._reply_keys:
            return
        keys = self._core.keyspace.queue(queue)
        try:
            await ensure_queue_async(self._client, self._core.keyspace, keys)
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot create queue {queue}: {exc}") from None
        if queue in self._reply_keys:
            return
        first_key = next(iter(self._reply_keys.values()), None)
        self._reply_keys[queue] = self._core.reply_key(queue)
        self._keys_changed.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())
        if first_key is not None:
            await self._wake(first_key)

    async def _wake(self, key: str) -> None:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, WAKE)
            pipe.pexpire(key, WAKE_TTL_MS, nx=True)
            await pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not wake the reply listener: %s", exc)

    async def _listen(self) -> None:
        """Like ``Producer._listen``: redis-py reconnects with backoff, this loop carries on."""
        while not self._closed:
            if not self._reply_keys:
                self._keys_changed.clear()
                await self._keys_changed.wait()
                continue
            keys = list(self._reply_keys.values())
            try:
                if self._outage.active:
                    self._outage.back(await self._recover())
                popped = await self._listen_client.blmpop(
                    LISTEN_TIMEOUT_S, len(keys), *keys, direction="LEFT", count=REPLY_BATCH
                )
            except redis.RedisError as exc:
                if self._closed:
                    return
                self._outage.lost(exc)
                if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    # A refusal (ACL, OOM...): redis-py does not retry these, so pause here.
                    await asyncio.sleep(1.0)
                continue
            if popped:
                self._dispatch(cast(list[bytes], popped[1]))

    async def _recover(self) -> int:
        """Like ``Producer._recover``: queues again, then stored results of waiting handles."""
        keyspace = self._core.keyspace
        for queue in list(self._reply_keys):
            await ensure_queue_async(self._listen_client, keyspace, keyspace.queue(queue))
        waiting = list(self._pending.values())
        resolved = 0
        for start in range(0, len(waiting), RECOVER_BATCH):
            part = waiting[start : start + RECOVER_BATCH]
            pipe = self._listen_client.pipeline(transaction=False)
            for handle in part:
                pipe.hgetall(keyspace.queue(handle.queue).result(handle.id))
            rows = await pipe.execute()
            for handle, fields in zip(part, rows, strict=True):
                outcome = stored_outcome(handle.id, fields)
                if outcome is not None and self._pending.get(handle.id) is handle:
                    del self._pending[handle.id]
                    handle._resolve(outcome)
                    resolved += 1
        return resolved

    def _dispatch(self, items: list[bytes]) -> None:
        for outcome in read_replies(items):
            handle = self._pending.pop(outcome.id, None)
            if handle is not None:
                handle._resolve(outcome)
