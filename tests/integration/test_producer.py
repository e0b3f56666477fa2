"""The producer library against real workers: ordering, sharing, errors, lifecycle, numpy.

Every test ends with its queue drained: requests left waiting are served by a worker started at
the end, and the test waits for their outcome before it returns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import redis

from helpers.workers import WorkerFactory, assert_drained, wait_serving
from redbatch import (
    AsyncProducer,
    Producer,
    RequestCancelled,
    RequestFailed,
    ResultNotFound,
    ResultTimeout,
)
from redbatch.errors import ConfigError, DuplicateRequestId, PayloadError, ProducerClosed
from redbatch.producer._core import LISTEN_TIMEOUT_S
from redbatch.protocol import codec
from redbatch.protocol.fields import OK, decode_reply
from redbatch.protocol.keys import KeySpace

WAIT = 30.0  # a generous bound on waits that should end in well under a second


def stream_of(namespace: str, queue: str) -> str:
    return KeySpace(namespace).queue(queue).stream


def wait_reply(client: redis.Redis, key: str) -> Any:
    """Block until an outcome lands on a reply list nobody listens to any more (closed
    producer); returns the decoded outcome. Skips wake markers (empty request id)."""
    while True:
        popped = client.blpop([key], timeout=WAIT)
        assert popped is not None, f"no reply on {key} within {WAIT} s"
        outcome = decode_reply(popped[1])
        if outcome.id:
            return outcome


# -- ordering and sharing --------------------------------------------------------------------


def test_map_keeps_input_order_for_10000_items(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue], "redbatch.handlers:echo", "--max-batch-size", "256")
    worker_factory([queue], "redbatch.handlers:echo", "--max-batch-size", "64")
    payloads: list[Any] = [i if i % 2 else f"s{i}" for i in range(10_000)]
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        results = producer.map(queue, payloads, timeout=60)
    assert results == payloads
    assert_drained(redis_client, stream_of(namespace, queue))


def test_threads_sharing_one_producer_get_their_own_results(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    # Both serving before the load: one worker may do all the work, and a worker stopped at
    # teardown while still importing dies of the SIGTERM (exit -15, an empty log).
    wait_serving(worker_factory([queue]))
    wait_serving(worker_factory([queue]))
    threads, per_thread = 8, 200
    start = threading.Barrier(threads)

    with Producer.from_url(redis_url, namespace=namespace) as producer:

        def run(t: int) -> list[Any]:
            start.wait(timeout=WAIT)  # all threads submit at the same time
            handles = [producer.submit(queue, {"t": t, "i": i}) for i in range(per_thread)]
            return [h.result(timeout=WAIT) for h in handles]

        with ThreadPoolExecutor(threads) as pool:
            per_thread_results = list(pool.map(run, range(threads)))

    for t, results in enumerate(per_thread_results):
        assert results == [{"t": t, "i": i} for i in range(per_thread)]
    assert_drained(redis_client, stream_of(namespace, queue))


# -- results by id ------------------------------------------------------------------------


def test_get_result_from_another_producer(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue], "helpers.handlers:poison")
    with (
        Producer.from_url(redis_url, namespace=namespace) as sender,
        Producer.from_url(redis_url, namespace=namespace) as other,
    ):
        assert sender.submit(queue, [1, "two"], id="good-1").result(timeout=WAIT) == [1, "two"]
        with pytest.raises(RequestFailed):
            sender.submit(queue, "poison", id="bad-1").result(timeout=WAIT)

        assert other.id != sender.id
        assert other.get_result(queue, "good-1") == [1, "two"]
        with pytest.raises(RequestFailed) as failed:
            other.get_result(queue, "bad-1")
        assert failed.value.request_id == "bad-1"
        assert failed.value.remote_type == "ValueError"
        assert "poison payload" in failed.value.remote_message
        with pytest.raises(ResultNotFound):
            other.get_result(queue, "never-submitted")
    assert_drained(redis_client, stream_of(namespace, queue))


# -- numpy ------------------------------------------------------------------------------------


def assert_same_array(got: Any, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert np.array_equal(got, want)


def test_numpy_arrays_round_trip_exactly(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue])
    rng = np.random.default_rng(7)
    arrays = [
        rng.standard_normal((17, 33)).astype(np.float32),
        np.arange(-50, 50, dtype=np.int64) * (2**40),
        rng.standard_normal(64).astype(np.float16),
        np.array(3.25),  # 0-d
        np.zeros((0, 4), dtype=np.uint8),
    ]
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        results = producer.map(queue, arrays, timeout=WAIT)
        nested = producer.call(
            queue,
            {"emb": arrays[0], "meta": {"ids": arrays[1], "scalar": arrays[3]}, "n": 2},
            timeout=WAIT,
        )
    for got, want in zip(results, arrays, strict=True):
        assert_same_array(got, want)
    assert nested["n"] == 2
    assert_same_array(nested["emb"], arrays[0])
    assert_same_array(nested["meta"]["ids"], arrays[1])
    assert_same_array(nested["meta"]["scalar"], arrays[3])
    assert_drained(redis_client, stream_of(namespace, queue))


# -- timeouts and closing --------------------------------------------------------------------


def test_result_timeout_then_the_request_still_ends_sync(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """With cancel_on_timeout=False a timed-out wait leaves the request alone: it still runs."""
    with Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as producer:
        handle = producer.submit(queue, "late")
        began = time.monotonic()
        with pytest.raises(ResultTimeout):
            handle.result(timeout=0.2)
        assert time.monotonic() - began < 2.0
        assert not handle.done()
        worker_factory([queue])
        assert handle.result(timeout=WAIT) == "late"
    assert_drained(redis_client, stream_of(namespace, queue))


def test_result_timeout_then_the_request_ends_cancelled_async_worker_skips_cancelled(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """Default cancel_on_timeout: the timed-out request is cancelled, and the same handle
    ends RequestCancelled. Needs the worker's cancel check (a worker that lacks it runs the
    request, and the handle returns "late")."""

    async def main() -> float:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, "late")
            began = time.monotonic()
            with pytest.raises(ResultTimeout):
                await handle.result(timeout=0.2)
            elapsed = time.monotonic() - began
            assert not handle.done()
            worker_factory([queue])
            with pytest.raises(RequestCancelled):
                await handle.result(timeout=WAIT)
            return elapsed

    assert asyncio.run(main()) < 2.0
    assert_drained(redis_client, stream_of(namespace, queue))


def test_async_handles_followed_by_callbacks_not_tasks(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """add_done_callback + result_nowait (what bench follows 2,000 requests with); abandon
    stops following one the way a timed-out wait does (cancelled: cancel_on_timeout)."""

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            late = await producer.submit(queue, "abandoned")
            with pytest.raises(asyncio.InvalidStateError, match=late.id):
                late.result_nowait()
            late.abandon()
            worker_factory([queue], "helpers.handlers:poison")
            handles = await producer.submit_many(queue, ["a", "poison", "b"])
            seen: dict[str, Any] = {}
            all_in = asyncio.Event()

            def arrived(handle: Any) -> None:
                assert handle.done()
                try:
                    seen[handle.id] = handle.result_nowait()
                except RequestFailed as exc:
                    seen[handle.id] = exc
                if len(seen) == len(handles):
                    all_in.set()

            for handle in handles:
                handle.add_done_callback(arrived)
            await asyncio.wait_for(all_in.wait(), WAIT)
            a, poisoned, b = (seen[h.id] for h in handles)
            assert (a, b) == ("a", "b") and isinstance(poisoned, RequestFailed)
            called = asyncio.Event()
            handles[0].add_done_callback(lambda h: called.set())  # already done: called soon
            await asyncio.wait_for(called.wait(), WAIT)
            with pytest.raises(RequestCancelled):
                await late.result(timeout=WAIT)

    asyncio.run(main())
    assert_drained(redis_client, stream_of(namespace, queue))


def test_close_fails_waiting_handles_sync(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    producer = Producer.from_url(redis_url, namespace=namespace)
    handle = producer.submit(queue, "orphan", id="orphan-1")
    reply_key = KeySpace(namespace).queue(queue).reply(producer.id)
    waiting = ThreadPoolExecutor(1)
    # A thread blocked in result() while close() runs, and a handle nobody waits on yet.
    blocked = waiting.submit(handle.result, WAIT)
    other = producer.submit(queue, "orphan", id="orphan-2")
    began = time.monotonic()
    producer.close()
    with pytest.raises(ProducerClosed):
        blocked.result(timeout=WAIT)
    with pytest.raises(ProducerClosed):
        other.result(timeout=WAIT)
    assert time.monotonic() - began < 5.0
    waiting.shutdown()
    with pytest.raises(ProducerClosed):
        producer.submit(queue, "after close")

    worker_factory([queue])
    ended = {wait_reply(redis_client, reply_key).id for _ in range(2)}
    assert ended == {"orphan-1", "orphan-2"}
    assert_drained(redis_client, stream_of(namespace, queue))


def test_close_fails_waiting_handles_async(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    async def main() -> tuple[str, float]:
        producer = AsyncProducer.from_url(redis_url, namespace=namespace)
        handle = await producer.submit(queue, "orphan", id="orphan-1")
        waiter = asyncio.create_task(handle.result(WAIT))
        await asyncio.sleep(0)  # let the waiter start waiting (not a synchronisation)
        began = time.monotonic()
        await producer.close()
        with pytest.raises(ProducerClosed):
            await asyncio.wait_for(waiter, WAIT)
        with pytest.raises(ProducerClosed):
            await handle.result(WAIT)
        with pytest.raises(ProducerClosed):
            await producer.submit(queue, "after close")
        return producer.id, time.monotonic() - began

    producer_id, elapsed = asyncio.run(main())
    assert elapsed < 5.0
    worker_factory([queue])
    assert wait_reply(redis_client, KeySpace(namespace).queue(queue).reply(producer_id)).id == (
        "orphan-1"
    )
    assert_drained(redis_client, stream_of(namespace, queue))


# -- a second queue ---------------------------------------------------------------------------


def test_second_queue_is_listened_to_at_once_sync(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    second = f"{queue}-b"
    # One XREADGROUP covers both streams: the first call's result shows the worker serves both.
    worker_factory([queue, second])
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        # The listener is now blocked (5 s) on the first queue's reply list only.
        assert producer.call(queue, "first", timeout=WAIT) == "first"
        began = time.monotonic()
        assert producer.call(second, "second", timeout=WAIT) == "second"
        assert time.monotonic() - began < 3.0
    assert_drained(redis_client, stream_of(namespace, queue))
    assert_drained(redis_client, stream_of(namespace, second))


def test_second_queue_is_listened_to_at_once_async(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    second = f"{queue}-b"
    # One XREADGROUP covers both streams: the first call's result shows the worker serves both.
    worker_factory([queue, second])

    async def main() -> float:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            assert await producer.call(queue, "first", timeout=WAIT) == "first"
            began = time.monotonic()
            assert await producer.call(second, "second", timeout=WAIT) == "second"
            return time.monotonic() - began

    assert asyncio.run(main()) < 3.0
    assert_drained(redis_client, stream_of(namespace, queue))
    assert_drained(redis_client, stream_of(namespace, second))


# -- refused submissions ----------------------------------------------------------------------


def test_refused_submissions_add_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    stream = stream_of(namespace, queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        first = producer.submit(queue, "one", id="dup-1")
        assert redis_client.xlen(stream) == 1

        with pytest.raises(DuplicateRequestId):
            producer.submit(queue, "two", id="dup-1")
        with pytest.raises(DuplicateRequestId):
            producer.submit(queue, "three", id="dup-1", timeout=5)
        for bad_id in ("has space", "slash/no", "", "x" * 129, "brace{}"):
            with pytest.raises(ConfigError):
                producer.submit(queue, "x", id=bad_id)
        for bad_payload in ({1, 2}, object(), {"nested": [1, {3, 4}]}):
            with pytest.raises(PayloadError):
                producer.submit(queue, bad_payload)
        with pytest.raises(PayloadError):
            producer.map(queue, ["fine", object(), "also fine"])
        assert redis_client.xlen(stream) == 1

        worker_factory([queue])
        assert first.result(timeout=WAIT) == "one"
    assert_drained(redis_client, stream)


# -- seed 004: replies go where the producer listens -------------------------------------------


def test_reply_field_names_the_producer_and_the_reply_arrives(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, {"seed": 4}, id="seed-004")
        [(_, fields)] = redis_client.xrange(keys.stream)
        assert fields[b"id"] == b"seed-004"
        assert fields[b"reply"] == producer.id.encode()

        # A hand-written entry naming another producer: its reply must land on exactly
        # KeySpace(ns).queue(q).reply(<that id>), where that producer would listen.
        stranger = "p" + "0" * 32
        redis_client.xadd(
            keys.stream, {"id": "by-hand", "reply": stranger, "payload": codec.encode("hi")}
        )
        worker_factory([queue])
        assert handle.result(timeout=WAIT) == {"seed": 4}
        outcome = wait_reply(redis_client, keys.reply(stranger))
        assert (outcome.id, outcome.status) == ("by-hand", OK)
        assert codec.decode(outcome.body) == "hi"
        assert redis_client.llen(keys.reply(producer.id)) == 0  # the listener took its reply
    assert_drained(redis_client, keys.stream)


# -- map with failures ------------------------------------------------------------------------


def test_map_with_a_poison_item(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker_factory([queue], "helpers.handlers:poison")
    payloads = [f"item{i}" for i in range(40)]
    payloads[13] = "poison"
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        results = producer.map(queue, payloads, timeout=WAIT, return_exceptions=True)
        assert isinstance(results[13], RequestFailed)
        assert results[13].remote_type == "ValueError"
        assert results[:13] + results[14:] == payloads[:13] + payloads[14:]

        with pytest.raises(RequestFailed) as failed:
            producer.map(queue, payloads, timeout=WAIT)
        assert failed.value.remote_type == "ValueError"
        assert failed.value.remote_message == "poison payload"
        # map raised only after every request ended: nothing is left waiting.
        assert producer.map(queue, ["after"], timeout=WAIT) == ["after"]
    assert_drained(redis_client, stream_of(namespace, queue))


# -- listener connection lifecycle -----------------------------------------------------------


def test_async_close_is_prompt_right_after_a_result(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """close() must not wait out the listener's 5 s blocking pop: on Python 3.11 cancelling
    the listener can be lost inside redis-py, so close() also wakes it (closing took ~11 s)."""
    worker_factory([queue])

    async def main() -> list[float]:
        took = []
        for i in range(10):
            producer = AsyncProducer.from_url(redis_url, namespace=namespace)
            assert await producer.call(queue, i, timeout=WAIT) == i
            began = time.monotonic()
            await producer.close()
            took.append(time.monotonic() - began)
        return took

    assert max(asyncio.run(main())) < 2.0
    assert_drained(redis_client, stream_of(namespace, queue))


def test_listener_read_timeout_outlasts_its_blocking_pop(redis_url: str) -> None:
    """redis-py 8 reads with a 5 s socket timeout by default: the listener's 5 s pop would end
    in TimeoutError (retries, a warning and a 1 s pause) instead of an empty answer."""
    with Producer.from_url(redis_url) as producer:
        listen_client = producer._listener._listen_client
        timeout = listen_client.connection_pool.connection_kwargs["socket_timeout"]  # type: ignore[union-attr]
        assert timeout > LISTEN_TIMEOUT_S

    async def main() -> float:
        async with AsyncProducer.from_url(redis_url) as producer:
            await producer.connect()  # from_url connects at first use
            kwargs = producer._listener._blocking.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
            return float(kwargs["socket_timeout"])

    assert asyncio.run(main()) > LISTEN_TIMEOUT_S


def test_more_concurrent_async_submits_than_pool_connections_all_succeed(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    """redis-py's default pool fails the 101st concurrent command ("Too many connections");
    a burst of submitting tasks must wait for a connection instead."""
    worker_factory([queue])

    async def burst() -> list[int]:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:

            async def one(i: int) -> int:
                handle = await producer.submit(queue, i, timeout=60)
                value: int = await handle.result(60)
                return value

            return await asyncio.gather(*(one(i) for i in range(300)))

    assert asyncio.run(burst()) == list(range(300))
