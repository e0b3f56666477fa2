"""Backpressure and cancellation at the producer: QueueFull, PayloadTooLarge, cancel keys.

Tests whose name ends in ``worker_skips_cancelled`` also need the worker's cancel check (a
cancelled request that has not run ends ``cancelled``); select them with
``-k worker_skips_cancelled``. The others only look at what the producer writes.

Every test ends drained: a worker started at the end serves (or cancels) what is left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from helpers.entries import wait_cancel_key, wait_cancel_key_async
from helpers.workers import WorkerFactory, assert_drained, wait_until
from redbatch import (
    AsyncProducer,
    Producer,
    QueueFull,
    RequestCancelled,
    ResultTimeout,
)
from redbatch.errors import ConfigError, PayloadTooLarge
from redbatch.producer import AsyncHandle, Handle, MapQueueFull
from redbatch.producer._core import CANCEL_TTL_MS
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.scripts import Admission, Scripts, admit_args

WAIT = 30.0


def ids_in(client: redis.Redis, keys: QueueKeys) -> list[str]:
    return [fields[b"id"].decode() for _, fields in client.xrange(keys.stream)]


def cancelled_ids(client: redis.Redis, keys: QueueKeys) -> set[str]:
    prefix = keys.cancel("")
    return {k.decode()[len(prefix) :] for k in client.scan_iter(match=f"{prefix}*")}


def assert_cancel_key(client: redis.Redis, keys: QueueKeys, request_id: str) -> None:
    key = keys.cancel(request_id)
    assert client.get(key) is not None, f"{key} is not set"
    ttl = client.pttl(key)
    assert CANCEL_TTL_MS - 60_000 < ttl <= CANCEL_TTL_MS


def await_cancel_key(client: redis.Redis, keys: QueueKeys, request_id: str) -> None:
    """The cancel a timed-out wait implies goes in the background: wait for it, then check."""
    wait_cancel_key(client, keys, request_id)
    assert_cancel_key(client, keys, request_id)


async def await_cancel_key_async(client: redis.Redis, keys: QueueKeys, request_id: str) -> None:
    await wait_cancel_key_async(client, keys, request_id)
    assert_cancel_key(client, keys, request_id)


def ended(handle: Handle) -> str:
    """Wait for the handle's outcome: "ok" or "cancelled"."""
    try:
        handle.result(timeout=WAIT)
    except RequestCancelled:
        return "cancelled"
    return "ok"


async def ended_async(handle: AsyncHandle) -> str:
    try:
        await handle.result(timeout=WAIT)
    except RequestCancelled:
        return "cancelled"
    return "ok"


def wait_drained(client: redis.Redis, keys: QueueKeys) -> None:
    """For requests whose handles the test cannot reach (call and map that timed out)."""
    wait_until(
        lambda: (
            client.xlen(keys.stream) == 0
            and client.xpending(keys.stream, "workers")["pending"] == 0
        ),
        WAIT,
        f"{keys.stream} drained",
    )
    assert_drained(client, keys.stream)


# -- QueueFull --------------------------------------------------------------------------------


def test_queue_full_exactly_at_the_bound(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace, max_queue_len=5) as producer:
        handles = [producer.submit(queue, i) for i in range(5)]
        with pytest.raises(QueueFull) as full:
            producer.submit(queue, 5, id="sixth")
        assert (full.value.queue, full.value.length, full.value.max_queue_len) == (queue, 5, 5)
        assert redis_client.xlen(keys.stream) == 5
        assert "sixth" not in ids_in(redis_client, keys)

        worker_factory([queue])
        assert [h.result(timeout=WAIT) for h in handles] == list(range(5))
        # The refused request was unregistered: its id is free again.
        assert producer.submit(queue, "again", id="sixth").result(timeout=WAIT) == "again"
    assert_drained(redis_client, keys.stream)


def test_map_into_a_nearly_full_queue_adds_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace, max_queue_len=5) as producer:
        handles = [producer.submit(queue, i) for i in range(4)]
        with pytest.raises(QueueFull) as full:
            producer.map(queue, ["a", "b", "c"], timeout=WAIT)
        assert isinstance(full.value, MapQueueFull)
        assert full.value.admitted == []
        assert full.value.length == 4
        assert "nothing was added" in str(full.value)
        assert redis_client.xlen(keys.stream) == 4

        worker_factory([queue])
        assert [h.result(timeout=WAIT) for h in handles] == list(range(4))
        assert producer.map(queue, ["a", "b", "c"], timeout=WAIT) == ["a", "b", "c"]
    assert_drained(redis_client, keys.stream)


def test_map_in_chunks_over_the_bound_keeps_the_admitted_chunks(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    payloads = [f"m{i}" for i in range(8)]
    with Producer.from_url(redis_url, namespace=namespace, max_queue_len=5) as producer:
        with pytest.raises(MapQueueFull) as full:
            producer.map(queue, payloads, timeout=WAIT, chunk=2)
        admitted = full.value.admitted
        # Chunks of 2: 2 + 2 fit, the third would make 6 > 5 and is refused whole.
        assert len(admitted) == 4
        assert full.value.length == 4
        assert "the first 4 requests of this map call" in str(full.value)
        assert ids_in(redis_client, keys) == [h.id for h in admitted]

        worker_factory([queue])
        assert [h.result(timeout=WAIT) for h in admitted] == payloads[:4]
        assert producer.get_result(queue, admitted[0].id) == "m0"
    assert_drained(redis_client, keys.stream)


def test_no_bound_with_zero(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace, max_queue_len=0) as producer:
        handles = [producer.submit(queue, i) for i in range(30)]
        assert redis_client.xlen(keys.stream) == 30
        worker_factory([queue])
        assert [h.result(timeout=WAIT) for h in handles] == list(range(30))
    assert_drained(redis_client, keys.stream)


def test_bad_max_queue_len_is_refused(redis_url: str) -> None:
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ConfigError):
            Producer.from_url(redis_url, max_queue_len=bad)


def test_queue_full_async(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)

    async def main() -> None:
        async with AsyncProducer.from_url(
            redis_url, namespace=namespace, max_queue_len=3
        ) as producer:
            first = await producer.submit(queue, "first")
            with pytest.raises(MapQueueFull) as full:
                await producer.map(queue, ["a", "b", "c", "d"], timeout=WAIT, chunk=1)
            admitted = full.value.admitted
            assert [type(h) for h in admitted] == [AsyncHandle, AsyncHandle]
            assert redis_client.xlen(keys.stream) == 3
            with pytest.raises(QueueFull):
                await producer.submit(queue, "refused", id="refused")
            assert redis_client.xlen(keys.stream) == 3

            worker_factory([queue])
            assert await first.result(timeout=WAIT) == "first"
            assert [await h.result(timeout=WAIT) for h in admitted] == ["a", "b"]
            assert await (await producer.submit(queue, 1, id="refused")).result(WAIT) == 1

    asyncio.run(main())
    assert_drained(redis_client, keys.stream)


# -- PayloadTooLarge --------------------------------------------------------------------------


def test_payload_too_large_writes_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    big = b"x" * 2000
    with Producer.from_url(redis_url, namespace=namespace, max_payload_bytes=1024) as producer:
        with pytest.raises(PayloadTooLarge):
            producer.submit(queue, big)
        with pytest.raises(PayloadTooLarge):
            producer.map(queue, ["a", "b", big, "d"], timeout=WAIT)
        assert redis_client.keys(f"{namespace}:*") == []  # not even the queue was created

        first = producer.submit(queue, "small")
        with pytest.raises(PayloadTooLarge):
            producer.map(queue, ["a", "b", big, "d"], timeout=WAIT, chunk=1)
        assert ids_in(redis_client, keys) == [first.id]

        worker_factory([queue])
        assert first.result(timeout=WAIT) == "small"
        assert producer.map(queue, ["a", "b"], timeout=WAIT) == ["a", "b"]
    assert_drained(redis_client, keys.stream)


def test_payload_too_large_async(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    async def main() -> None:
        async with AsyncProducer.from_url(
            redis_url, namespace=namespace, max_payload_bytes=1024
        ) as producer:
            with pytest.raises(PayloadTooLarge):
                await producer.submit(queue, b"x" * 2000)
            with pytest.raises(PayloadTooLarge):
                await producer.map(queue, ["a", "b", b"x" * 2000], timeout=WAIT)

    asyncio.run(main())
    assert redis_client.keys(f"{namespace}:*") == []  # nothing to drain


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_sets_the_key_with_a_ttl(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, "x")
        assert handle.cancel() is True
        assert_cancel_key(redis_client, keys, handle.id)
        producer.cancel(queue, "from-elsewhere")  # any id, also one this producer never sent
        assert_cancel_key(redis_client, keys, "from-elsewhere")
        with pytest.raises(ConfigError):
            producer.cancel(queue, "bad id")

        worker_factory([queue])
        assert ended(handle) == "cancelled"  # cancelled before any worker started
        done = producer.submit(queue, "y")
        assert done.result(timeout=WAIT) == "y"
        assert done.cancel() is False  # its outcome is here: nothing to cancel
        assert cancelled_ids(redis_client, keys) == {handle.id, "from-elsewhere"}
    assert_drained(redis_client, keys.stream)


def test_cancel_async_sets_the_key(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, "x")
            assert await handle.cancel() is True
            assert_cancel_key(redis_client, keys, handle.id)
            await producer.cancel(queue, "by-id")
            assert_cancel_key(redis_client, keys, "by-id")
            worker_factory([queue])
            assert await ended_async(handle) == "cancelled"
            assert await handle.cancel() is False

    asyncio.run(main())
    assert_drained(redis_client, keys.stream)


def test_cancel_on_timeout_sets_the_key_sync(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, "h")
        with pytest.raises(ResultTimeout):
            handle.result(timeout=0.1)
        await_cancel_key(redis_client, keys, handle.id)

        with pytest.raises(ResultTimeout) as timed_out:
            producer.call(queue, "c", timeout=0.1)
        await_cancel_key(redis_client, keys, timed_out.value.request_id)

        before = set(ids_in(redis_client, keys))
        with pytest.raises(ResultTimeout):
            producer.map(queue, ["m1", "m2", "m3"], timeout=0.2)
        mapped = set(ids_in(redis_client, keys)) - before
        assert len(mapped) == 3
        for request_id in mapped:
            await_cancel_key(redis_client, keys, request_id)
        assert cancelled_ids(redis_client, keys) == before | mapped

        worker_factory([queue])
        assert ended(handle) == "cancelled"
        wait_drained(redis_client, keys)


def test_cancel_on_timeout_sets_the_key_async(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handle = await producer.submit(queue, "h")
            with pytest.raises(ResultTimeout):
                await handle.result(timeout=0.1)
            await await_cancel_key_async(redis_client, keys, handle.id)
            with pytest.raises(ResultTimeout) as timed_out:
                await producer.call(queue, "c", timeout=0.1)
            await await_cancel_key_async(redis_client, keys, timed_out.value.request_id)
            before = set(ids_in(redis_client, keys))
            with pytest.raises(ResultTimeout):
                await producer.map(queue, ["m1", "m2"], timeout=0.2)
            for request_id in set(ids_in(redis_client, keys)) - before:
                await await_cancel_key_async(redis_client, keys, request_id)
            assert len(cancelled_ids(redis_client, keys)) == 4
            worker_factory([queue])
            assert await ended_async(handle) == "cancelled"

    asyncio.run(main())
    wait_drained(redis_client, keys)


def test_no_cancel_on_timeout_when_disabled(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    options: dict[str, Any] = {"namespace": namespace, "cancel_on_timeout": False}

    async def main() -> AsyncHandle:
        async with AsyncProducer.from_url(redis_url, **options) as producer:
            handle = await producer.submit(queue, "a")
            with pytest.raises(ResultTimeout):
                await handle.result(timeout=0.1)
            with pytest.raises(ResultTimeout):
                await producer.map(queue, ["a1", "a2"], timeout=0.1)
            worker_factory([queue])
            assert await handle.result(timeout=WAIT) == "a"
            return handle

    with Producer.from_url(redis_url, **options) as producer:
        handle = producer.submit(queue, "s")
        with pytest.raises(ResultTimeout):
            handle.result(timeout=0.1)
        with pytest.raises(ResultTimeout):
            producer.call(queue, "c", timeout=0.1)
        with pytest.raises(ResultTimeout):
            producer.map(queue, ["s1", "s2"], timeout=0.1)
        assert cancelled_ids(redis_client, keys) == set()
        asyncio.run(main())  # starts the worker
        assert handle.result(timeout=WAIT) == "s"
    assert cancelled_ids(redis_client, keys) == set()
    wait_drained(redis_client, keys)


def test_cancel_on_timeout_is_best_effort(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handle = producer.submit(queue, "h")

        def broken_pipeline(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Redis went away")

        with (
            monkeypatch.context() as patch,
            caplog.at_level(logging.WARNING, logger="redbatch.producer.background"),
        ):
            patch.setattr(producer._client, "pipeline", broken_pipeline)
            patch.setattr(producer._client, "execute_command", broken_pipeline)
            with pytest.raises(ResultTimeout):
                handle.result(timeout=0.1)
            wait_until(lambda: "could not cancel" in caplog.text, WAIT, "the warning")
        assert "could not cancel timed-out request(s)" in caplog.text
        assert "Redis went away" in caplog.text
        assert cancelled_ids(redis_client, keys) == set()

        worker_factory([queue])
        assert handle.result(timeout=WAIT) == "h"  # never cancelled: it ran
    assert_drained(redis_client, keys.stream)


# -- end to end: needs the worker's cancel check ----------------------------------------------


def test_cancelled_requests_never_run_worker_skips_cancelled(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with (
        Producer.from_url(redis_url, namespace=namespace) as producer,
        Producer.from_url(redis_url, namespace=namespace) as other,
    ):
        handles = [producer.submit(queue, i) for i in range(10)]
        for handle in handles[::2]:
            handle.cancel()
        other.cancel(queue, handles[1].id)  # by id, from another producer

        worker_factory([queue])
        outcomes = [ended(h) for h in handles]
        assert outcomes == ["cancelled", "cancelled"] + ["cancelled", "ok"] * 4
        for handle in handles[::2]:
            assert redis_client.hget(keys.result(handle.id), "status") == b"cancelled"
            assert redis_client.hget(keys.result(handle.id), "payload") is None
        with pytest.raises(RequestCancelled):
            other.get_result(queue, handles[0].id)
        assert producer.get_result(queue, handles[3].id) == 3
    assert_drained(redis_client, keys.stream)


def test_map_timeout_cancels_its_waiting_requests_worker_skips_cancelled(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        with pytest.raises(ResultTimeout):
            producer.map(queue, list(range(6)), timeout=0.2, chunk=4)
        ids = ids_in(redis_client, keys)
        assert len(ids) == 6
        worker_factory([queue])
        wait_drained(redis_client, keys)
        statuses = [redis_client.hget(keys.result(i), "status") for i in ids]
        assert statuses == [b"cancelled"] * 6


def test_one_admission_of_requests_with_different_fields_writes_each_as_given(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    """admit.lua builds each XADD in one argument table it reuses: a short request after a
    long one, and requests with and without a timeout, each get exactly their own fields,
    ``enq`` and ``deadline`` (Redis's clock) before the last field."""
    keys = KeySpace(namespace).queue(queue)
    long_one = {"id": "a", "reply": "p", "cost": 3, "tag": "t", "payload": b"A"}
    short_one = {"id": "b", "payload": b"B"}
    timed = {"id": "c", "reply": "p", "payload": b"C"}
    entries = [(0, long_one), (5000, short_one), (5000, timed), (0, dict(short_one, id="d"))]
    admission = Admission("p", seq=1, low=1, ttl_ms=60_000)
    script_keys, argv = admit_args(keys, entries, admission, max_queue_len=0)
    reply = Scripts(redis_client).admit(keys=script_keys, args=argv)
    assert reply[0] == 1 and len(reply) == 5
    written = [
        [(name.decode(), value) for name, value in fields.items()]
        for _, fields in redis_client.xrange(keys.stream)
    ]
    enq = {int(dict(fields)["enq"]) for fields in written}
    assert len(enq) == 1  # one clock reading for the call
    [now] = enq
    stamp = [("enq", str(now).encode())]
    deadline = [("deadline", str(now + 5000).encode())]

    def expected(fields: dict[str, Any], extra: list[tuple[str, bytes]]) -> list[Any]:
        pairs = [(name, str(v).encode() if isinstance(v, int) else v) for name, v in fields.items()]
        pairs = [(n, v.encode() if isinstance(v, str) else v) for n, v in pairs]
        return pairs[:-1] + extra + pairs[-1:]

    assert written == [
        expected(long_one, stamp),
        expected(short_one, stamp + deadline),
        expected(timed, stamp + deadline),
        expected(dict(short_one, id="d"), stamp),
    ]
