"""The core request path through real processes: producer -> Redis -> worker -> producer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from helpers.workers import WorkerProcess, assert_drained
from redbatch import AsyncProducer, Producer
from redbatch.protocol.keys import KeySpace


def test_sync_round_trip(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker_factory([queue])
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, {"text": "hello", "n": [1, 2.5, None]})
        assert handle.result(timeout=30) == {"text": "hello", "n": [1, 2.5, None]}
        assert handle.done()
        assert producer.call(queue, "again", timeout=30) == "again"
    assert_drained(redis_client, KeySpace(namespace).queue(queue).stream)


def test_async_round_trip(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker_factory([queue])

    async def main() -> list[object]:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, {"a": 1})
            first = await handle.result(timeout=30)
            called = await producer.call(queue, b"bytes", timeout=30)
            mapped = await producer.map(queue, list(range(100)), timeout=30)
            return [first, called, mapped]

    first, called, mapped = asyncio.run(main())
    assert first == {"a": 1}
    assert called == b"bytes"
    assert mapped == list(range(100))
    assert_drained(redis_client, KeySpace(namespace).queue(queue).stream)
