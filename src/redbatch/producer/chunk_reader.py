"""Reading a streaming request's kept chunks (``rb:{Q}:chunks:<id>``) from a position on:
for a producer that reconnects mid-stream, or any process that knows the request id.

The chunks come from ``XREAD BLOCK`` on the chunk stream; the end from the result hash,
written by the worker only after the request's last chunk, so once it exists one more read
finds every chunk there is. What a read does is one flow (``reading``) of plans and
``Emit`` steps; ``read_stream`` and ``read_stream_async`` only run it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from redbatch.errors import ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore, stored_outcome
from redbatch.producer.chunk_feed import ChunkFeed, Ended, Restarted, check_resume
from redbatch.producer.plans import Plan, Steps
from redbatch.producer.runners import run, run_async
from redbatch.protocol import chunks as wire
from redbatch.protocol.fields import OK, Outcome
from redbatch.transport.connection import AsyncClient, Client

# How long one blocking read waits before the result hash is checked (ms).
_BLOCK_MS = 100
_COUNT = 512


@dataclass(frozen=True, slots=True)
class Emit:
    """A step of the reading flow: hand ``values`` to the reader (an iterator: it may raise
    StreamRestarted after the values before the restart)."""

    values: Iterator[Any]


Reading = Generator["Plan[Any] | Emit", Any, None]


def read_stream(client: Client, flow: Reading) -> Iterator[Any]:
    """Yield the chunks ``flow`` (``reading``) finds, then end with the request's outcome
    (an error outcome raises as ``result()`` would)."""
    steps = Steps(flow)
    for step in steps:
        if isinstance(step, Emit):
            yield from step.values
        else:
            steps.settle(lambda: run(client, step))  # noqa: B023


async def read_stream_async(client: AsyncClient, flow: Reading) -> AsyncIterator[Any]:
    """``read_stream`` on an asyncio client."""
    steps = Steps(flow)
    for step in steps:
        if not isinstance(step, Emit):
            await steps.settle_async(run_async(client, step))
            continue
        for value in step.values:
            yield value


def reading(
    core: ProducerCore,
    queue: str,
    request_id: str,
    after: tuple[int, int],
    timeout: float | None,
    resume: str,
) -> Reading:
    """Read ``request_id``'s chunks after position ``after`` ((attempt, seq); (0, -1): from
    the first) until its outcome."""
    check_resume(resume)
    keys = core.queue_keys(queue)
    stream_key = keys.chunks(request_id)
    feed = ChunkFeed()
    feed.resume_after(after)
    # XREAD is exclusive: after the position given, or from the very first entry.
    cursor = wire.entry_id(*after) if after[1] >= 0 else "0-0"
    deadline = None if timeout is None else time.monotonic() + timeout
    what = f"cannot read the chunks of request {request_id}"
    while True:
        block = _block_ms(deadline, request_id, timeout)
        rows = yield _xread(what, stream_key, cursor, "COUNT", _COUNT, "BLOCK", block)
        outcome = None
        if not rows:
            command = ("HGETALL", keys.result(request_id))
            stored = yield Plan(what, [command], lambda replies: replies[0])
            outcome = stored_outcome(request_id, stored)
        for _, entries in rows:
            feed.offer(wire.chunks_from_entries(request_id, entries))
            cursor = entries[-1][0]
        yield Emit(_ready(feed, core, request_id, resume))
        if feed.at_end:
            return
        if outcome is not None and not (yield _xread(what, stream_key, cursor, "COUNT", 1)):
            core.value(outcome, core.content_type)  # raises unless ok
            return


def _xread(what: str, key: str, cursor: Any, *options: Any) -> Plan[list[Any]]:
    """XREAD of one chunk stream after ``cursor``: its [stream, entries] rows (none: [])."""
    command = ("XREAD", *options, "STREAMS", key, cursor)
    return Plan(what, [command], lambda replies: list(replies[0] or []))


def _ready(feed: ChunkFeed, core: ProducerCore, request_id: str, resume: str) -> Iterator[Any]:
    """The chunks ready in ``feed``; at an end mark, none (the caller ends on ``feed.ended``)."""
    while (item := feed.take(resume)) is not None and not isinstance(item, Ended):
        if isinstance(item, Restarted):
            raise StreamRestarted(request_id, item.attempt)
        yield core.value(Outcome(request_id, OK, item.body), core.content_type)


def _block_ms(deadline: float | None, request_id: str, timeout: float | None) -> int:
    """How long the next blocking read may wait; ResultTimeout once ``deadline`` passed."""
    if deadline is None:
        return _BLOCK_MS
    left = deadline - time.monotonic()
    if left <= 0:
        raise ResultTimeout(request_id, timeout or 0.0)
    return max(1, min(_BLOCK_MS, round(left * 1000)))
