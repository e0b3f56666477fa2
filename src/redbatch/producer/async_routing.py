"""Where the asyncio producer's requests go (as ``producer.routing`` for the sync one); the
caller bounds these calls by its deadline with ``asyncio.timeout``."""

from __future__ import annotations

import redis

from redbatch.connection import AsyncClient, redis_failure
from redbatch.producer._core import ProducerCore
from redbatch.producer.async_listener import AsyncReplyListener
from redbatch.protocol.keys import check_queue_name
from redbatch.protocol.shards import ShardRouter, read_shards_async, served_names
from redbatch.protocol.streams import ensure_queue_async


class AsyncRoutes:
    """The producer's shard router and the queues its listener knows."""

    def __init__(
        self, client: AsyncClient, core: ProducerCore, listener: AsyncReplyListener
    ) -> None:
        self._client = client
        self._core = core
        self._listener = listener
        self.router = ShardRouter()

    async def route(
        self, queue: str, count: int, shard_key: str | bytes | None = None
    ) -> list[str]:
        """Like ``Routes.route``."""
        check_queue_name(queue)
        await self._refresh_shards(queue)
        names = self.router.pick(queue, count, shard_key)
        for name in dict.fromkeys(names):
            await self._use_queue(name)
        return names

    async def served(self, queue: str) -> tuple[str, ...]:
        check_queue_name(queue)
        await self._refresh_shards(queue)
        return served_names(queue, self.router.shards(queue))

    async def _refresh_shards(self, queue: str) -> None:
        if self.router.stale(queue):
            try:
                shards = await read_shards_async(self._client, self._core.keyspace, queue)
            except redis.RedisError as exc:
                raise redis_failure(f"cannot read the config of queue {queue}", exc) from None
            self.router.update(queue, shards)

    async def _use_queue(self, queue: str) -> None:
        """Create physical queue ``queue`` (a queue or a shard) and listen on its replies."""
        if self._listener.knows(queue):
            return
        keys = self._core.keyspace.queue(queue)
        try:
            await ensure_queue_async(self._client, self._core.keyspace, keys)
        except redis.RedisError as exc:
            raise redis_failure(f"cannot create queue {queue}", exc) from None
        await self._listener.add(queue)
