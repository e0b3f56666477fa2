"""transport.packed: several commands packed by hiredis in one write (the worker's started
mark and cancellation check), against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from redbatch.protocol.keys import GROUP
from redbatch.transport.connection import backoff_retry_async
from redbatch.transport.deferred import packed_script
from redbatch.transport.packed import (
    AsyncPackedScript,
    claim_then_get,
    pack,
    packed_pipeline,
    send_packed,
)


def test_replies_come_in_order(redis_client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:k"
    replies = packed_pipeline(redis_client, [("SET", key, "v"), ("GET", key), ("DEL", key)])
    assert replies == [b"OK", b"v", 1]


def test_the_commands_go_out_in_one_write(redis_client: redis.Redis, namespace: str) -> None:
    """One system call for them all: a send to a local Redis costs tens of microseconds on a
    virtual machine (it wakes the server), and the started mark is on a batch's path."""
    pool = redis_client.connection_pool
    conn = pool.get_connection()
    conn.connect()
    sent: list[int] = []
    real = conn._sock

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def sendall(self, data: bytes) -> None:
            sent.append(len(data))
            real.sendall(data)

    conn._sock = Counting()
    pool.release(conn)  # the next call takes it again
    key = f"{namespace}:k"
    replies = packed_pipeline(redis_client, [("SET", key, "v"), ("GET", key), ("DEL", key)])
    assert replies == [b"OK", b"v", 1]
    assert len(sent) == 1, sent
    read = send_packed(redis_client, pack([("SET", key, "w"), ("GETDEL", key)]))
    assert read() == [b"OK", b"w"] and len(sent) == 2, sent


def test_an_error_reply_raises_after_every_reply_is_read(
    redis_client: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:k"
    redis_client.set(key, "text")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        packed_pipeline(redis_client, [("LPUSH", key, "x"), ("SET", f"{key}2", "after")])
    assert redis_client.get(f"{key}2") == b"after"  # the command after the error ran
    # The pool's connection is still in step: the next call reads its own replies.
    assert packed_pipeline(redis_client, [("GET", key)]) == [b"text"]


def test_a_killed_connection_is_sent_again(redis_client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:k"
    [before] = packed_pipeline(redis_client, [("CLIENT", "ID")])  # the pool keeps it
    admin = redis.Redis(connection_pool=redis.ConnectionPool.from_url(_url(redis_client)))
    try:
        assert admin.client_kill_filter(_id=before) == 1
    finally:
        admin.close()
    after, count = packed_pipeline(redis_client, [("CLIENT", "ID"), ("INCR", key)])
    assert after != before  # sent again on a new connection
    assert count == 1


def test_claim_then_get_marks_started_in_each_stream_and_reads_the_keys(
    redis_client: redis.Redis, namespace: str
) -> None:
    streams = [f"{namespace}:{{q}}:stream", f"{namespace}:{{q}}:stream:high"]
    ids: dict[str, list[str]] = {}
    for stream in streams:
        redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        ids[stream] = [redis_client.xadd(stream, {"n": n}).decode() for n in range(3)]
        redis_client.xreadgroup(GROUP, "w1", {stream: ">"})
    cancel = f"{namespace}:{{q}}:cancel:"
    redis_client.set(cancel + "b", "1")
    flags = claim_then_get(
        redis_client, [(s, ids[s]) for s in streams], [cancel + "a", cancel + "b"],
        group=GROUP, consumer="w1", retry_count=2,
    )  # fmt: skip
    assert [bool(f) for f in flags] == [False, True]
    for stream in streams:
        pending = redis_client.xpending_range(stream, GROUP, "-", "+", 10)
        assert [p["message_id"].decode() for p in pending] == ids[stream]
        assert {p["times_delivered"] for p in pending} == {2}
        assert {p["consumer"] for p in pending} == {b"w1"}


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


# -- AsyncPackedScript: a plain asyncio client's scripts (the AsyncProducer's admission) -------

SLOW_ECHO = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"


def async_script(url: str, body: str = SLOW_ECHO) -> tuple[AsyncRedis, AsyncPackedScript]:
    client = AsyncRedis.from_url(url, retry=backoff_retry_async(3))  # as a producer's
    script = packed_script(client, client.register_script(body))
    assert isinstance(script, AsyncPackedScript)
    return client, script


def test_async_script_runs_and_loads_itself_after_a_flush(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    async def main() -> list[object]:
        client, script = async_script(redis_url)
        try:
            first = await script(keys=[f"{namespace}:a"], args=["one"])
            redis_client.script_flush()  # the server forgets it: NOSCRIPT, then loaded
            second = await script(keys=[f"{namespace}:a"], args=["two"])
            return [first, second]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [b"one", b"two"]
    assert redis_client.get(f"{namespace}:a") == b"two"


def test_async_script_is_sent_again_on_a_new_connection(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    async def main() -> object:
        client, script = async_script(redis_url)
        try:
            await script(keys=[f"{namespace}:a"], args=["one"])
            for conn in redis_client.client_list():
                if conn["cmd"] == "evalsha":
                    redis_client.client_kill_filter(_id=conn["id"])
            return await script(keys=[f"{namespace}:a"], args=["two"])
        finally:
            await client.aclose()

    assert asyncio.run(main()) == b"two"


def test_a_cancelled_async_call_leaves_no_reply_for_the_next(
    redis_url: str, redis_client: redis.Redis, namespace: str
) -> None:
    """Cancelled after it was sent, before its reply came: the next call on the pool reads
    its own reply. Redis holds the reply back by ``CLIENT PAUSE`` (a busy script timed with
    ``TIME`` is not portable: Redis 8 and Valkey 8 freeze ``TIME`` inside a script)."""

    async def main() -> object:
        client, script = async_script(redis_url)
        try:
            await script(keys=[f"{namespace}:a"], args=["warm"])  # connected, script loaded
            redis_client.client_pause(300)  # ms; every client's commands wait it out
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await script(keys=[f"{namespace}:a"], args=["late"])
            return await script(keys=[f"{namespace}:a"], args=["own"])
        finally:
            await client.aclose()

    assert asyncio.run(main()) == b"own"
