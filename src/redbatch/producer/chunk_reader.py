"""Reading a streaming request's kept chunks (``rb:{Q}:chunks:<id>``) from a position on:
for a producer that reconnects mid-stream, or any process that knows the request id.

The chunks come from ``XREAD BLOCK`` on the chunk stream; the end from the result hash,
written by the worker only after the request's last chunk, so once it exists one more read
finds every chunk there is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import redis

from redbatch.connection import AsyncClient, Client, redis_failure
from redbatch.errors import ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore, stored_outcome
from redbatch.producer.chunk_feed import ChunkFeed, Ended, Restarted, check_resume
from redbatch.protocol import chunks as wire
from redbatch.protocol.fields import OK, Outcome

# How long one blocking read waits before the result hash is checked (ms).
_BLOCK_MS = 100
_COUNT = 512


def read_stream(
    client: Client,
    core: ProducerCore,
    queue: str,
    request_id: str,
    after: tuple[int, int],
    timeout: float | None,
    resume: str,
) -> Iterator[Any]:
    """Yield ``request_id``'s chunks after position ``after`` ((attempt, seq); (0, -1): from
    the first), then end with its outcome (an error outcome raises as ``result()`` would)."""
    check_resume(resume)
    keys = core.queue_keys(queue)
    feed = ChunkFeed()
    feed.resume_after(after)
    # XREAD is exclusive: after the position given, or from the very first entry.
    cursor = wire.entry_id(*after) if after[1] >= 0 else "0-0"
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        block = _block_ms(deadline, request_id, timeout)
        try:
            rows = cast(
                list[Any],
                client.xread({keys.chunks(request_id): cursor}, count=_COUNT, block=block),
            )
            stored = {} if rows else client.hgetall(keys.result(request_id))
            outcome = stored_outcome(request_id, cast(dict[bytes, bytes], stored))
        except redis.RedisError as exc:
            raise redis_failure(f"cannot read the chunks of request {request_id}", exc) from None
        for _, entries in rows or []:
            feed.offer(wire.chunks_from_entries(request_id, entries))
            cursor = entries[-1][0]
        yield from _ready(feed, core, request_id, resume)
        if feed.at_end:
            return
        if outcome is not None and not client.xread({keys.chunks(request_id): cursor}, count=1):
            core.value(outcome, core.content_type)  # raises unless ok
            return


def _ready(feed: ChunkFeed, core: ProducerCore, request_id: str, resume: str) -> Iterator[Any]:
    """The chunks ready in ``feed``; at an end mark, none (the caller ends on ``feed.ended``)."""
    while (item := feed.take(resume)) is not None and not isinstance(item, Ended):
        if isinstance(item, Restarted):
            raise StreamRestarted(request_id, item.attempt)
        yield core.value(Outcome(request_id, OK, item.body), core.content_type)


async def read_stream_async(
    client: AsyncClient,
    core: ProducerCore,
    queue: str,
    request_id: str,
    after: tuple[int, int],
    timeout: float | None,
    resume: str,
) -> AsyncIterator[Any]:
    """``read_stream`` on an asyncio client."""
    check_resume(resume)
    keys = core.queue_keys(queue)
    stream_key, result_key = keys.chunks(request_id), keys.result(request_id)
    feed = ChunkFeed()
    feed.resume_after(after)
    cursor = wire.entry_id(*after) if after[1] >= 0 else "0-0"
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        block = _block_ms(deadline, request_id, timeout)
        try:
            rows = cast(
                list[Any], await client.xread({stream_key: cursor}, count=_COUNT, block=block)
            )
            stored = {} if rows else await client.hgetall(result_key)
            outcome = stored_outcome(request_id, cast(dict[bytes, bytes], stored))
            for _, entries in rows or []:
                feed.offer(wire.chunks_from_entries(request_id, entries))
                cursor = entries[-1][0]
            more = outcome is not None and await client.xread({stream_key: cursor}, count=1)
        except redis.RedisError as exc:
            raise redis_failure(f"cannot read the chunks of request {request_id}", exc) from None
        for value in _ready(feed, core, request_id, resume):
            yield value
        if feed.at_end:
            return
        if outcome is not None and not more:
            core.value(outcome, core.content_type)  # raises unless ok
            return


def _block_ms(deadline: float | None, request_id: str, timeout: float | None) -> int:
    """How long the next blocking read may wait; ResultTimeout once ``deadline`` passed."""
    if deadline is None:
        return _BLOCK_MS
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout(request_id, timeout or 0.0)
    return max(1, min(_BLOCK_MS, round(left * 1000)))
