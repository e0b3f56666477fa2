"""The asyncio producer inside a web app's event loop: no blocking I/O on the loop,
cancellation that follows the caller, one loop per producer, connections that name
themselves. Real redis-server, real worker processes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from helpers.entries import wait_cancel_key_async
from helpers.workers import WorkerFactory
from redbatch import AsyncProducer, Producer, RequestCancelled
from redbatch.errors import ConnectionFailed, WrongEventLoop
from redbatch.protocol.keys import KeySpace

WAIT = 30.0


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


async def ticker_stall(work: Callable[[], object]) -> float:
    """The longest gap (s) between the 10 ms ticks of a task running while ``work`` runs."""
    gaps: list[float] = []
    running = True

    async def tick() -> None:
        last = time.monotonic()
        while running:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last - 0.01)
            last = now

    task = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    work()
    await asyncio.sleep(0.05)
    running = False
    await task
    return max(gaps)


def test_construction_does_no_io_and_the_first_call_fails_within_its_timeout(
    silent_url: str,
) -> None:
    async def main() -> tuple[float, float]:
        made: list[AsyncProducer] = []
        stall = await ticker_stall(lambda: made.append(AsyncProducer.from_url(silent_url)))
        producer = made[0]
        began = time.monotonic()
        with pytest.raises(ConnectionFailed):
            await producer.call("q", "x", timeout=0.5)
        elapsed = time.monotonic() - began
        await producer.close()
        return stall, elapsed

    stall, elapsed = asyncio.run(main())
    assert stall < 0.005, f"constructing stalled the loop for {stall * 1000:.1f} ms"
    assert elapsed < 1.5, f"the first call took {elapsed:.2f} s with a 0.5 s timeout"


def test_connect_fails_at_start_up(silent_url: str, redis_url: str) -> None:
    async def main() -> None:
        producer = AsyncProducer.from_url(silent_url)
        with pytest.raises(ConnectionFailed):
            async with asyncio.timeout(WAIT):
                await producer.connect()
        await producer.close()
        async with AsyncProducer.from_url(redis_url) as working:
            await working.connect()

    asyncio.run(main())


def test_a_cancelled_wait_cancels_the_request(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """asyncio.wait_for timing out cancels the awaiting coroutine: the request ends
    ``cancelled`` and no worker runs it; the same for ``call`` and ``map``."""

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, "nobody reads this")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(handle.result(), 0.1)
            await wait_cancel_key_async(redis_client, KeySpace(namespace).queue(queue), handle.id)
            ids = set(redis_client.smembers(KeySpace(namespace).queues))
            assert ids  # the queue exists; now call and map, cancelled the same way
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(producer.call(queue, "c"), 0.1)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(producer.map(queue, ["m1", "m2"]), 0.1)
            worker_factory([queue])
            with pytest.raises(RequestCancelled):
                await handle.result(timeout=WAIT)
        stream = KeySpace(namespace).queue(queue).stream
        cancelled = redis_client.keys(KeySpace(namespace).queue(queue).cancel("*"))
        assert len(cancelled) == 4, cancelled
        assert stream

    asyncio.run(main())


def test_cancel_on_cancel_false_leaves_the_request_running(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    async def main() -> None:
        async with AsyncProducer.from_url(
            redis_url, namespace=namespace, cancel_on_cancel=False
        ) as producer:
            handle = await producer.submit(queue, "still wanted")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(handle.result(), 0.1)
            worker_factory([queue])
            assert await handle.result(timeout=WAIT) == "still wanted"

    asyncio.run(main())


def test_another_event_loop_raises_naming_the_fix(redis_url: str, namespace: str) -> None:
    producer = AsyncProducer.from_url(redis_url, namespace=namespace)
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(producer.ping())
        with pytest.raises(WrongEventLoop, match="one per event loop"):
            asyncio.run(asyncio.wait_for(producer.submit("q", "x"), WAIT))
        with pytest.raises(WrongEventLoop):
            asyncio.run(asyncio.wait_for(producer.close(), WAIT))
        first.run_until_complete(producer.close())  # on its own loop it closes
    finally:
        first.close()


def test_a_handle_awaited_on_another_loop_raises_naming_the_fix(
    redis_url: str, namespace: str
) -> None:
    """A handle carried to another loop (a thread with its own asyncio.run): asyncio alone
    raises "attached to a different loop" and leaves an unretrieved future behind."""
    producer = AsyncProducer.from_url(redis_url, namespace=namespace)
    first = asyncio.new_event_loop()
    try:
        handle = first.run_until_complete(producer.submit("nobody-serves", "x", timeout=WAIT))
        with pytest.raises(WrongEventLoop, match="one per event loop"):
            asyncio.run(handle.result(timeout=WAIT))
        with pytest.raises(WrongEventLoop, match="one per event loop"):
            asyncio.run(handle.cancel())
        assert not handle.done()  # nothing was waited on or sent from the wrong loop
        assert first.run_until_complete(handle.cancel())  # on its own loop it works
        first.run_until_complete(producer.close())
    finally:
        first.close()


def test_connections_name_themselves(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    async def main() -> None:
        async with AsyncProducer.from_url(
            redis_url, namespace=namespace, name="web-1", max_connections=4
        ) as producer:
            await producer.submit(queue, "x", timeout=WAIT)
            wanted = {"redbatch:producer:web-1", "redbatch:listener:web-1"}
            deadline = time.monotonic() + WAIT
            # The listener's task connects once it runs: wait for it, not a fixed time.
            while not wanted <= (names := {c["name"] for c in redis_client.client_list()}):
                assert time.monotonic() < deadline, names
                await asyncio.sleep(0.01)
            assert producer._client.connection_pool.max_connections == 4

    asyncio.run(main())
    with Producer.from_url(redis_url, namespace=namespace, name="cron-2") as sync_producer:
        sync_producer.submit(queue, "y", timeout=WAIT)
        wanted = {"redbatch:producer:cron-2", "redbatch:listener:cron-2"}
        deadline = time.monotonic() + WAIT
        while not wanted <= (names := {c["name"] for c in redis_client.client_list()}):
            assert time.monotonic() < deadline, names
            time.sleep(0.01)
