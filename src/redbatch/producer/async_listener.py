"""The asyncio producer's reply listener: tasks popping its reply lists.

As ``producer.listener`` for threads: on one node one task pops every reply list of the
producer (blocking, on a connection of its own); on a Redis Cluster one task per queue or
shard used (a pop names keys of one slot), each holding one connection of the cluster
client's pool for that slot's node while it blocks, with blocks shorter than that client's
read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from redbatch.connection import AsyncClient, backoff_retry_async, clone_kwargs
from redbatch.producer._core import (
    LISTEN_RETRIES,
    LISTEN_SOCKET_TIMEOUT_S,
    LISTEN_TIMEOUT_S,
    RECOVER_BATCH,
    REPLY_BATCH,
    WAKE,
    WAKE_TTL_MS,
    Outage,
    ProducerCore,
    stored_outcome,
)
from redbatch.producer.async_handle import AsyncHandle
from redbatch.protocol.chunks import split_records
from redbatch.protocol.streams import ensure_queue_async

log = logging.getLogger(__name__)

# A cluster listener's blocking pop (s): shorter than the cluster client's read timeout
# (connection.DEFAULT_SOCKET_TIMEOUT_S), since it pops through that client's connections.
_CLUSTER_LISTEN_S = 2.0


def _listener(client: redis.asyncio.Redis, name: str) -> redis.asyncio.Redis:
    """A one-connection client for the single-node listener's blocking pops."""
    pool = client.connection_pool
    kwargs = clone_kwargs(client, socket_timeout=LISTEN_SOCKET_TIMEOUT_S)
    kwargs["client_name"] = name
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(
            connection_class=pool.connection_class,
            max_connections=1,
            retry=backoff_retry_async(LISTEN_RETRIES),
            **kwargs,
        )
    )


class AsyncReplyListener:
    """Resolves the handles in ``pending`` (the producer's) from the reply lists of the
    queues ``add``ed."""

    def __init__(
        self, client: AsyncClient, core: ProducerCore, pending: dict[str, AsyncHandle]
    ) -> None:
        self._client = client
        self._core = core
        self._pending = pending
        self._cluster = isinstance(client, AsyncRedisCluster)
        self._listen_client: AsyncClient = (
            client
            if isinstance(client, AsyncRedisCluster)
            else _listener(client, core.client_name("listener"))
        )
        self.outage = Outage()  # read by the producer's timeout path
        self._reply_keys: dict[str, str] = {}  # physical queue -> reply key
        self._keys_changed = asyncio.Event()
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []

    def knows(self, queue: str) -> bool:
        return queue in self._reply_keys

    async def add(self, queue: str) -> None:
        """Listen to the replies of physical queue ``queue`` (created by the caller)."""
        if queue in self._reply_keys:
            return
        first_key = next(iter(self._reply_keys.values()), None)
        self._reply_keys[queue] = self._core.reply_key(queue)
        self._keys_changed.set()
        if self._cluster or not self._tasks:
            only = queue if self._cluster else None
            self._tasks.append(asyncio.get_running_loop().create_task(self._listen(only)))
        if first_key is not None and not self._cluster:
            await self._wake(first_key)

    async def stop(self) -> None:
        """End every listener task and close their connection."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        # On Python 3.11 the cancellation can be lost (asyncio.wait_for inside redis-py
        # swallows it when it lands as its inner await ends); a listener then blocks in its
        # pop for up to LISTEN_TIMEOUT_S. A marker on its key ends that pop.
        for key in list(self._reply_keys.values())[: None if self._cluster else 1]:
            await self._wake(key)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # aclose() leaves a pool it was given alone: close the listener's connection here.
        if not isinstance(self._listen_client, AsyncRedisCluster):  # else: the client's pools
            await self._listen_client.connection_pool.disconnect()
            await self._listen_client.aclose()

    async def _wake(self, key: str) -> None:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, WAKE)
            pipe.pexpire(key, WAKE_TTL_MS, nx=True)
            await pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "could not wake the reply listener: %s",
                exc,
                extra={"event": "listener_wake_failed"},
            )

    async def _listen(self, only: str | None) -> None:
        """Like ``Producer._listen``: redis-py reconnects with backoff, this loop carries on."""
        block_s = _CLUSTER_LISTEN_S if self._cluster else LISTEN_TIMEOUT_S
        while not self._closed:
            if not self._reply_keys:
                self._keys_changed.clear()
                await self._keys_changed.wait()
                continue
            keys = [self._reply_keys[only]] if only else list(self._reply_keys.values())
            try:
                if self.outage.active:
                    self.outage.back(await self._recover())
                popped = await self._listen_client.blmpop(
                    block_s, len(keys), *keys, direction="LEFT", count=REPLY_BATCH
                )
            except redis.RedisError as exc:
                if self._closed:
                    return
                self.outage.lost(exc)
                if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    # A refusal (ACL, OOM...): redis-py does not retry these, so pause here.
                    await asyncio.sleep(1.0)
                elif self._cluster:
                    await asyncio.sleep(0.1)  # its retries re-read the slot map, no backoff
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
        outcomes, chunks = split_records(items)
        for request_id, found in chunks.items():  # first: they precede the final reply
            waiting = self._pending.get(request_id)
            if waiting is not None:
                waiting._chunks(found)
        for outcome in outcomes:
            handle = self._pending.pop(outcome.id, None)
            if handle is not None:
                handle._resolve(outcome)
