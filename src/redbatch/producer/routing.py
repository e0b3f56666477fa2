"""Where the synchronous producer's requests go: a queue's shards, each created and
listened to at first use, the shard count re-read when stale within the caller's deadline."""

from __future__ import annotations

import threading

import redis

from redbatch.connection import Client, redis_failure
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Deadline
from redbatch.producer.listener import ReplyListener
from redbatch.protocol.deferred import bounded_command
from redbatch.protocol.keys import check_queue_name
from redbatch.protocol.shards import SHARDS_FIELD, ShardRouter, parse_shards, served_names
from redbatch.protocol.streams import ensure_queue


class Routes:
    """The producer's shard router and the queues its listener knows (``cond`` guards
    the listener's)."""

    def __init__(
        self,
        client: Client,
        core: ProducerCore,
        listener: ReplyListener,
        cond: threading.Condition,
    ) -> None:
        self._client = client
        self._core = core
        self._listener = listener
        self._cond = cond
        self.router = ShardRouter()

    def route(
        self,
        queue: str,
        count: int,
        shard_key: str | bytes | None = None,
        deadline: Deadline | None = None,
    ) -> list[str]:
        """The physical queues (shards) of ``count`` admissions to ``queue``, each created
        and listened to; re-reads the shard count when it is older than shards.REFRESH_S."""
        check_queue_name(queue)
        self._refresh_shards(queue, deadline)
        names = self.router.pick(queue, count, shard_key)
        for name in dict.fromkeys(names):
            self._use_queue(name)
        return names

    def served(self, queue: str) -> tuple[str, ...]:
        check_queue_name(queue)
        self._refresh_shards(queue)
        return served_names(queue, self.router.shards(queue))

    def _refresh_shards(self, queue: str, deadline: Deadline | None = None) -> None:
        """Re-read the shard count when stale, never past the caller's ``deadline``: once
        that has passed, the count known (or one shard) stands and the admission that
        follows raises the caller's ResultTimeout."""
        if not self.router.stale(queue):
            return
        at = deadline.at if deadline is not None else None
        command = ("HMGET", self._core.keyspace.config(queue), SHARDS_FIELD)
        try:
            raw = bounded_command(self._client, command, at)[0]
        except redis.RedisError as exc:
            if deadline is not None and deadline.passed():
                return
            raise redis_failure(f"cannot read the config of queue {queue}", exc) from None
        self.router.update(queue, parse_shards(queue, raw))

    def _use_queue(self, queue: str) -> None:
        """Create physical queue ``queue`` (a queue or a shard) and listen on its replies."""
        with self._cond:
            if self._listener.knows(queue):
                return
        keys = self._core.keyspace.queue(queue)
        try:
            ensure_queue(self._client, self._core.keyspace, keys)
        except redis.RedisError as exc:
            raise redis_failure(f"cannot create queue {queue}", exc) from None
        self._listener.add(queue)
