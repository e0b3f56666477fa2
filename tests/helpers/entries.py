"""Reading and writing queue entries and results directly, as redis-cli users do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import msgpack
import redis

from helpers.workers import wait_until
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue

# Bound of every wait for an outcome: generous, only reached when something is broken.
WAIT_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def text(fields: dict[bytes, bytes]) -> dict[str, str]:
    """A result hash or dead entry with every field decoded (payloads here are ASCII)."""
    return {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}


def wait_started(client: redis.Redis, stream: str, count: int) -> None:
    """Wait until ``count`` entries of ``stream`` are marked started (delivery count 2, the
    wire contract's mark, set in the round trip that also reads their cancel keys): from then
    a cancel reaches the handler, not the check before it runs. Pending alone (only read) is
    too early."""

    def started() -> bool:
        rows = client.xpending_range(stream, "workers", "-", "+", count)
        return len(rows) == count and all(r["times_delivered"] >= 2 for r in rows)

    wait_until(started, WAIT_S, f"{count} entries of {stream} started")


def wait_results(
    client: redis.Redis, keys: QueueKeys, ids: Iterable[str], timeout: float = WAIT_S
) -> dict[str, dict[bytes, bytes]]:
    """Wait until every id has a result hash; returns id -> hash."""
    ids = list(ids)

    def ready() -> dict[str, dict[bytes, bytes]] | None:
        pipe = client.pipeline(transaction=False)
        for request_id in ids:
            pipe.hgetall(keys.result(request_id))
        hashes = pipe.execute()
        if all(hashes):
            return dict(zip(ids, hashes, strict=True))
        return None

    found: dict[str, dict[bytes, bytes]] = wait_until(ready, timeout, f"results of {ids[:5]}")
    return found


def id_entries(ids: Iterable[str]) -> list[dict[str, Any]]:
    """An entry per id whose payload is the id itself (what an echo handler answers)."""
    return [{"id": request_id, "payload": pack(request_id)} for request_id in ids]


def add_atomically(client: redis.Redis, stream: str, entries: list[dict[str, Any]]) -> None:
    """XADD every entry in one MULTI, so a single blocked read is handed all of them."""
    pipe = client.pipeline(transaction=True)
    for fields in entries:
        pipe.xadd(stream, fields)
    pipe.execute()


def result_hashes(client: redis.Redis, keys: QueueKeys) -> dict[str, dict[bytes, bytes]]:
    """Every result hash of the queue (found by SCAN), as request id -> hash."""
    prefix = keys.result("")
    names = [name.decode() for name in client.scan_iter(match=keys.result("*"), count=1000)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    return {
        name[len(prefix) :]: fields
        for name, fields in zip(names, pipe.execute(), strict=True)
        if fields
    }


def dead_letters(client: redis.Redis, keys: QueueKeys) -> list[dict[str, str]]:
    """The queue's dead-letter stream, each entry decoded (payload fields left raw-ish)."""
    return [text(fields) for _entry_id, fields in client.xrange(keys.dead)]


def queue_keys(client: redis.Redis, namespace: str, queue: str) -> QueueKeys:
    """The queue's keys, with its stream and group created (as a worker or producer would)."""
    space = KeySpace(namespace)
    keys = space.queue(queue)
    ensure_queue(client, space, keys)
    return keys


def wait_cancel_key(
    client: redis.Redis, keys: QueueKeys, request_id: str, timeout: float = WAIT_S
) -> None:
    """Wait until the request's cancel key is set: a producer sets it from a background task
    (a timed-out or cancelled wait), so no event announces it."""
    wait_until(lambda: client.exists(keys.cancel(request_id)), timeout, f"{request_id} cancelled")


async def wait_cancel_key_async(
    client: redis.Redis, keys: QueueKeys, request_id: str, timeout: float = WAIT_S
) -> None:
    """As ``wait_cancel_key``, sleeping on this event loop so the producer's cancel task,
    which runs on it, can set the key meanwhile."""
    async with asyncio.timeout(timeout):
        while not client.exists(keys.cancel(request_id)):
            await asyncio.sleep(0.01)
