"""transport.packed: several commands packed by hiredis in one write (the worker's started
mark and cancellation check), against a real server."""

from __future__ import annotations

import pytest
import redis

from redbatch.protocol.keys import GROUP
from redbatch.transport.packed import claim_then_get, packed_pipeline


def test_replies_come_in_order(redis_client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:k"
    replies = packed_pipeline(redis_client, [("SET", key, "v"), ("GET", key), ("DEL", key)])
    assert replies == [b"OK", b"v", 1]


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
