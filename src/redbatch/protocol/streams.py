"""Creating a queue: its lane streams and their consumer groups, and its name in the registry.

Whichever side comes first (producer or worker) creates them; doing it twice is harmless.
Every lane (priority stream, ``QueueKeys.streams``) gets the group ``workers`` at id 0, so
requests added before any worker existed are served. One round trip for all of it (on a
cluster, redis-py splits the pipeline by node: the lanes share the queue's slot, the registry
``rb:queues`` is elsewhere; nothing here needs to be atomic).
"""

from __future__ import annotations

from typing import Any

import redis

from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys
from redbatch.transport.connection import AsyncClient, Client


def _is_busygroup(exc: object) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("BUSYGROUP")


def _check(replies: list[Any]) -> None:
    """Raise the first error of the pipeline other than BUSYGROUP (the group exists)."""
    for reply in replies:
        if isinstance(reply, Exception) and not _is_busygroup(reply):
            raise reply


def ensure_queue(client: Client, keyspace: KeySpace, keys: QueueKeys) -> None:
    pipe = client.pipeline(transaction=False)
    for stream in keys.streams:
        pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
    pipe.sadd(keyspace.queues, keys.name)
    _check(pipe.execute(raise_on_error=False))


async def ensure_queue_async(client: AsyncClient, keyspace: KeySpace, keys: QueueKeys) -> None:
    pipe = client.pipeline(transaction=False)
    for stream in keys.streams:
        pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
    pipe.sadd(keyspace.queues, keys.name)
    _check(await pipe.execute(raise_on_error=False))
