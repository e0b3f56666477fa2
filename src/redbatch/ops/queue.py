"""What ``redbatch queue QUEUE [--shards N]`` does: show or change a queue's shared settings,
kept in ``rb:{QUEUE}:config`` (today one: ``shards``, the number of physical queues it is
split in).

Growing is safe while producers and workers run: the new shards' streams and groups are
created (and listed in ``rb:queues`` for the scheduler) before the count is written, and every
party re-reads the count within ``protocol.shards.REFRESH_S``. Shrinking is refused: a
producer still using the old count, or a request waiting in a removed shard, would be left
with nobody serving it.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from redbatch.config import check_environment
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.protocol.keys import KeySpace, shard_names
from redbatch.protocol.shards import SHARDS_FIELD, parse_shards, read_shards, served_names
from redbatch.protocol.streams import ensure_queue
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import Client, connection_name, describe_error, ping


def apply(
    redis_url: str, namespace: str, cluster: bool | None, queue: str, shards: int | None
) -> dict[str, Any]:
    """Connect (a cluster client on a cluster: the shards' keys live on several nodes), set
    the count if asked, and describe the queue. Redis errors become one line (exit 3 when
    Redis cannot be reached)."""
    check_environment(os.environ)
    keyspace = KeySpace(namespace)
    client = connect_any(
        redis_url, cluster=cluster, retries=1, client_name=connection_name("ops", "queue")
    )
    try:
        ping(client, redis_url)
        if shards is not None and shards != read_shards(client, keyspace, queue):
            set_shards(client, keyspace, queue, shards)
        return queue_settings(keyspace, queue, read_shards(client, keyspace, queue))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectionFailed(describe_error(redis_url, exc)) from None
    except redis.ResponseError as exc:
        raise RedbatchError(describe_error(redis_url, exc)) from None
    finally:
        client.close()


def queue_settings(keyspace: KeySpace, queue: str, shards: int) -> dict[str, Any]:
    served = served_names(queue, shards)
    return {
        "queue": queue,
        "config": keyspace.config(queue),
        "shards": shards,
        "physical_queues": list(served),
        "streams": [keyspace.queue(name).stream for name in served],
    }


def set_shards(client: Client, keyspace: KeySpace, queue: str, shards: int) -> None:
    """Grow ``queue`` to ``shards`` shards: create them, then publish the count (under WATCH,
    so two operators at once cannot shrink it by accident). ConfigError to shrink."""
    for name in shard_names(queue, shards):
        ensure_queue(client, keyspace, keyspace.queue(name))
    key = keyspace.config(queue)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                current = parse_shards(queue, pipe.hget(key, SHARDS_FIELD))
                if shards < current:
                    raise ConfigError(
                        f"queue {queue} has {current} shards: shrinking is not supported "
                        f"(requests in the removed shards would be left unserved)"
                    )
                pipe.multi()
                pipe.hset(key, SHARDS_FIELD, str(shards))
                pipe.execute()
                return
            except redis.WatchError:
                continue  # someone else changed it meanwhile: judge again
