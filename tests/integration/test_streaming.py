"""Streaming partial results end to end: real worker processes, a private Redis, the sync
and async producers' ``stream()``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.entries import wait_cancel_key_async
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import AsyncProducer, ConfigError, Producer, RequestCancelled, StreamRestarted
from redbatch.protocol.keys import KeySpace

Factory = Callable[..., WorkerProcess]
WAIT_S = 60.0
FAST_TTL = ("--heartbeat-ttl", "2")


def expected(tag: str, n: int) -> list[str]:
    return [f"{tag}:{k}" for k in range(n)]


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """While this file exists, a ``gated_tokens`` stream holds before its ``pause_at`` step."""
    path = tmp_path / "gate"
    path.touch()
    return path


def gated_worker(worker_factory: Factory, queue: str, gate: Path, *args: str) -> WorkerProcess:
    """A serving worker whose handler streams tokens and holds at ``gate``."""
    handler = "helpers.stream_handlers:gated_tokens"
    return wait_serving(worker_factory([queue], handler, "--handler-option", f"gate={gate}", *args))


def test_200_concurrent_streams_each_get_every_chunk_once_in_order_then_the_result(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    wait_serving(
        worker_factory(
            [queue], "helpers.stream_handlers:tokens", "--handler-option", "step_s=0.002"
        )
    )
    sizes = {f"s{i}": 3 + i % 7 for i in range(100)}
    async_sizes = {f"a{i}": 3 + i % 5 for i in range(100)}
    got: dict[str, tuple[list[Any], Any]] = {}
    errors: list[BaseException] = []

    async def async_side() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:

            async def one(tag: str, n: int) -> None:
                handle = await producer.submit(queue, {"tag": tag, "n": n}, stream=True)
                chunks = [c async for c in handle.stream(timeout=WAIT_S)]
                got[tag] = (chunks, await handle.result(timeout=WAIT_S))

            await asyncio.gather(*(one(t, n) for t, n in async_sizes.items()))

    def run_async() -> None:
        try:
            asyncio.run(async_side())
        except BaseException as exc:  # reported below
            errors.append(exc)

    side = threading.Thread(target=run_async)
    side.start()
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = {
            t: producer.submit(queue, {"tag": t, "n": n}, stream=True) for t, n in sizes.items()
        }

        def consume(tags: list[str]) -> None:
            for tag in tags:
                chunks = list(handles[tag].stream(timeout=WAIT_S))
                got[tag] = (chunks, handles[tag].result(timeout=WAIT_S))

        tags = list(handles)
        readers = [threading.Thread(target=consume, args=(tags[i::10],)) for i in range(10)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(WAIT_S)
    side.join(WAIT_S)
    assert not errors, errors
    for tag, n in {**sizes, **async_sizes}.items():
        assert got[tag] == (expected(tag, n), f"{tag}:done"), tag


def test_a_request_submitted_without_streaming_interest_gets_its_result_only(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    wait_serving(worker_factory([queue], "helpers.stream_handlers:chunks_only"))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        plain = producer.submit(queue, {"tag": "p", "n": 0})
        assert plain.result(timeout=WAIT_S) == ["p:a", "p:b"]  # no Final: its chunks
        assert plain.position == (0, -1)
        # Its stream() would end empty having had no chunks: it says why instead, at once.
        with pytest.raises(ConfigError, match="without stream=True"):
            plain.stream()
        assert list(producer.stream(queue, {"tag": "s", "n": 0}, timeout=WAIT_S)) == ["s:a", "s:b"]

    async def async_side() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, {"tag": "q", "n": 0})
            with pytest.raises(ConfigError, match="without stream=True"):
                handle.stream()
            assert await handle.result(timeout=WAIT_S) == ["q:a", "q:b"]

    asyncio.run(async_side())


def test_a_cancelled_stream_stops_and_ends_cancelled_while_its_batchmate_completes(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory, gate: Path
) -> None:
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        # Both wait in the stream before the worker starts: one batch.
        cancelled = producer.submit(queue, {"tag": "c", "n": 6, "pause_at": 2}, stream=True)
        mate = producer.submit(queue, {"tag": "m", "n": 6}, stream=True)
        gated_worker(worker_factory, queue, gate)
        stream = cancelled.stream(timeout=WAIT_S)
        assert [next(stream), next(stream)] == ["c:0", "c:1"]
        assert cancelled.cancel()
        gate.unlink()  # the worker's next step sees the cancel
        with pytest.raises(RequestCancelled):
            next(stream)
        with pytest.raises(RequestCancelled):
            cancelled.result(timeout=WAIT_S)
        assert list(mate.stream(timeout=WAIT_S)) == expected("m", 6)
        assert mate.result(timeout=WAIT_S) == "m:done"


@pytest.mark.parametrize("resume", ["raise", "restart"])
def test_a_worker_killed_mid_stream_restarts_the_stream_and_the_rerun_gives_the_result(
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
    gate: Path,
    resume: str,
) -> None:
    first = gated_worker(worker_factory, queue, gate, *FAST_TTL)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, {"tag": "k", "n": 5, "pause_at": 3}, stream=True)
        stream = handle.stream(timeout=WAIT_S, resume=resume)
        seen = [next(stream) for _ in range(3)]
        assert seen == expected("k", 3)
        first.kill()  # SIGKILL, mid-stream: held before step 3
        gate.unlink()
        scheduler_factory()
        gated_worker(worker_factory, queue, gate, *FAST_TTL)
        if resume == "raise":
            with pytest.raises(StreamRestarted) as restarted:
                next(stream)
            assert restarted.value.attempt == 2
            assert list(handle.stream(timeout=WAIT_S)) == expected("k", 5)  # from seq 0
        else:
            assert seen + list(stream) == expected("k", 3) + expected("k", 5)
        assert handle.result(timeout=WAIT_S) == "k:done"
        assert handle.position == (2, 4)


def test_a_producer_that_reconnects_mid_stream_resumes_after_its_last_chunk(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    gate: Path,
) -> None:
    gated_worker(worker_factory, queue, gate)
    with Producer.from_url(redis_url, namespace=namespace) as first:
        handle = first.submit(queue, {"tag": "r", "n": 6, "pause_at": 3}, stream=True)
        stream = handle.stream(timeout=WAIT_S)
        assert [next(stream) for _ in range(3)] == expected("r", 3)
        position = handle.position
    assert position == (1, 2)
    gate.unlink()  # the stream goes on while nobody listens
    keys = KeySpace(namespace).queue(queue)
    wait_until(lambda: redis_client.exists(keys.result(handle.id)), WAIT_S, "the result")
    with Producer.from_url(redis_url, namespace=namespace) as second:
        rest = list(second.stream_from(queue, handle.id, after=position, timeout=WAIT_S))
        assert rest == ["r:3", "r:4", "r:5"]
        assert second.get_result(queue, handle.id) == "r:done"
        # From the start, too: a reader that had nothing.
        assert list(second.stream_from(queue, handle.id, timeout=WAIT_S)) == expected("r", 6)

    async def read_async() -> list[Any]:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as third:
            reader = third.stream_from(queue, handle.id, after=(1, 4), timeout=WAIT_S)
            return [chunk async for chunk in reader]

    assert asyncio.run(read_async()) == ["r:5"]


def test_cancelling_the_task_that_iterates_an_async_stream_cancels_the_request(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    gate: Path,
) -> None:
    keys = KeySpace(namespace).queue(queue)

    async def scenario() -> tuple[Any, Any]:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            cancelled, mate = await producer.submit_many(
                queue, [{"tag": "c", "n": 6, "pause_at": 2}, {"tag": "m", "n": 6}], stream=True
            )
            gated_worker(worker_factory, queue, gate)
            got: list[Any] = []
            two = asyncio.Event()

            async def read() -> None:
                async for chunk in cancelled.stream(timeout=WAIT_S):
                    got.append(chunk)
                    if len(got) == 2:
                        two.set()

            reader = asyncio.create_task(read())
            await asyncio.wait_for(two.wait(), WAIT_S)
            reader.cancel()  # a client that went away
            with pytest.raises(asyncio.CancelledError):
                await reader
            # The cancel reaches Redis from a background task; the worker sees it there.
            await wait_cancel_key_async(redis_client, keys, cancelled.id, WAIT_S)
            gate.unlink()
            assert got == ["c:0", "c:1"]
            with pytest.raises(RequestCancelled):
                await cancelled.result(timeout=WAIT_S)
            return [c async for c in mate.stream(timeout=WAIT_S)], await mate.result(WAIT_S)

    assert asyncio.run(scenario()) == (expected("m", 6), "m:done")


def test_an_item_ended_by_final_ends_its_stream_before_its_batch_ends(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory, gate: Path
) -> None:
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        short, long = producer.submit_many(
            queue, [{"tag": "s", "n": 2}, {"tag": "l", "n": 6, "pause_at": 4}], stream=True
        )
        gated_worker(worker_factory, queue, gate)
        assert list(short.stream(timeout=WAIT_S)) == expected("s", 2)
        assert not short.done()  # its batchmate is held at the gate: no result yet
        gate.unlink()
        assert short.result(timeout=WAIT_S) == "s:done"
        assert list(long.stream(timeout=WAIT_S)) == expected("l", 6)
