"""The producer's keywords, the same on every method and on both producers: a finite default
timeout, require_worker, per-item cost, id and shard_key on call, codec hooks, metrics.
Real redis-server, real worker processes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from helpers.workers import WorkerFactory
from redbatch import AsyncProducer, NoWorker, Producer, ResultTimeout
from redbatch.producer import Priority
from redbatch.protocol.keys import KeySpace

WAIT = 30.0


def stream_costs(client: redis.Redis, namespace: str, queue: str) -> list[int]:
    entries = client.xrange(KeySpace(namespace).queue(queue).stream)
    return [int(fields.get(b"cost", b"1")) for _, fields in entries]


def test_default_timeout_bounds_a_call_that_passes_none(
    redis_url: str, namespace: str, queue: str
) -> None:
    """No worker serves the queue: a call with no timeout ends at the producer's default."""
    with Producer.from_url(redis_url, namespace=namespace, default_timeout=0.3) as producer:
        began = time.monotonic()
        with pytest.raises(ResultTimeout, match=r"0\.3 s"):
            producer.call(queue, "nobody serves this")
        assert time.monotonic() - began < 2.0

    async def main() -> float:
        async with AsyncProducer.from_url(
            redis_url, namespace=namespace, default_timeout=0.3
        ) as producer:
            began = time.monotonic()
            handle = await producer.submit(queue, "x")
            with pytest.raises(ResultTimeout):
                await handle.result()
            return time.monotonic() - began

    assert asyncio.run(main()) < 2.0


def test_require_worker_raises_no_worker_and_adds_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    with Producer.from_url(redis_url, namespace=namespace, require_worker=True) as producer:
        with pytest.raises(NoWorker, match=queue):
            producer.submit(queue, "x")
        with pytest.raises(NoWorker):
            producer.map(queue, [1, 2])
        assert stream_costs(redis_client, namespace, queue) == []
        worker_factory([queue])
        deadline = time.monotonic() + WAIT
        while True:  # the worker's heartbeat appears once it serves
            try:
                assert producer.call(queue, "served", timeout=WAIT) == "served"
                break
            except NoWorker:
                assert time.monotonic() < deadline, "the worker never became live"
                time.sleep(0.05)

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            # per call, on a producer without the setting
            with pytest.raises(NoWorker):
                await producer.submit(f"{queue}-none", "x", require_worker=True)
            assert await producer.call(queue, "a", require_worker=True, timeout=WAIT) == "a"

    asyncio.run(main())


def test_per_item_cost_reaches_the_entries(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    """cost per item (a sequence, or a function of the payload) on submit_many and map;
    entries carry it to the batch former."""
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        producer.submit_many(queue, ["a", "bb", "ccc"], cost=[1, 2, 3], timeout=WAIT)
        with pytest.raises(ResultTimeout):
            producer.map(queue, ["dddd", "eeeee"], cost=len, timeout=0.2)
        producer.submit(queue, "s", cost=7, timeout=WAIT)
    assert stream_costs(redis_client, namespace, queue) == [1, 2, 3, 4, 5, 7]

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            await producer.submit_many(queue, ["x", "yy"], cost=len, timeout=WAIT)

    asyncio.run(main())
    assert stream_costs(redis_client, namespace, queue)[-2:] == [1, 2]


def test_call_takes_id_shard_key_and_priority(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    worker_factory([queue])
    high: Priority = "high"
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, 1, id="order-1", timeout=WAIT) == 1
        assert producer.call(queue, 2, id="order-1", timeout=WAIT) == 1  # the same request
        assert producer.call(queue, 3, shard_key="user-9", priority=high, timeout=WAIT) == 3

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            assert await producer.call(queue, 4, id="order-2", timeout=WAIT) == 4
            assert await producer.map(queue, [5, 6], priority="low", timeout=WAIT) == [5, 6]

    asyncio.run(main())


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def encode_point(obj: Any) -> Any:
    if isinstance(obj, Point):
        return {"__point__": [obj.x, obj.y]}
    raise TypeError(f"cannot encode {type(obj).__name__}")


def decode_point(data: dict[Any, Any]) -> Any:
    if "__point__" in data:
        return Point(*data["__point__"])
    return data


def test_encoder_and_decoder_hooks(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    """The echo worker sends back what it got: a Point leaves through the encoder and comes
    back through the decoder."""
    worker_factory([queue])
    hooks: dict[str, Any] = {"encoder": encode_point, "decoder": decode_point}
    with Producer.from_url(redis_url, namespace=namespace, **hooks) as producer:
        assert producer.call(queue, Point(1, 2), timeout=WAIT) == Point(1, 2)
        assert producer.map(queue, [Point(3, 4)], timeout=WAIT) == [Point(3, 4)]

    async def main() -> Any:
        async with AsyncProducer.from_url(redis_url, namespace=namespace, **hooks) as producer:
            return await producer.call(queue, Point(5, 6), timeout=WAIT)

    assert asyncio.run(main()) == Point(5, 6)


def test_metrics_on_the_apps_registry(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    registry = CollectorRegistry()
    worker_factory([queue])
    with Producer.from_url(redis_url, namespace=namespace, metrics=registry) as producer:
        assert producer.map(queue, [1, 2, 3], timeout=WAIT) == [1, 2, 3]
        with pytest.raises(ResultTimeout):
            producer.call(f"{queue}-unserved", "x", timeout=0.1)
    submits = registry.get_sample_value("redbatch_producer_submit_seconds_count")
    assert submits == 2
    ok = registry.get_sample_value("redbatch_producer_latency_seconds_count", {"outcome": "ok"})
    assert ok == 3
    assert registry.get_sample_value("redbatch_producer_timeouts_total") == 1
    assert registry.get_sample_value("redbatch_producer_queue_full_total") == 0
