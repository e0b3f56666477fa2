"""Creating a queue: its stream and consumer group, and its name in the queue registry.

Whichever side comes first (producer or worker) creates them; doing it twice is harmless.
The group starts at id 0 so requests added before any worker existed are served.
"""

from __future__ import annotations

import redis
import redis.asyncio

from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys


def _is_busygroup(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("BUSYGROUP")


def ensure_queue(client: redis.Redis, keyspace: KeySpace, keys: QueueKeys) -> None:
    try:
        client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not _is_busygroup(exc):
            raise
    client.sadd(keyspace.queues, keys.name)


async def ensure_queue_async(
    client: redis.asyncio.Redis, keyspace: KeySpace, keys: QueueKeys
) -> None:
    try:
        await client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not _is_busygroup(exc):
            raise
    await client.sadd(keyspace.queues, keys.name)
