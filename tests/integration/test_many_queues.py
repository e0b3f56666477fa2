"""A scheduler among many idle queues (issue 21): it visits the queues holding work, found
through the workers' marks in ``rb:watch``, and still re-queues a dead worker's request on
any of them within the usual bound (heartbeat TTL + a few passes)."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack
import redis

from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.protocol.streams import ensure_queue

Factory = Callable[..., WorkerProcess]
QUEUES = 500
TTL_S = 2
# Heartbeat TTL + several 0.2 s passes + room for a loaded 2-core machine: far below the
# 60 s the sweep alone would take to come back to the victim's queue.
BOUND_S = TTL_S + 3.0


def _populate(client: redis.Redis, keyspace: KeySpace, names: list[str]) -> None:
    for name in names:
        keys = keyspace.queue(name)
        ensure_queue(client, keyspace, keys)
        payload = msgpack.packb("hang" if name == names[QUEUES // 2] else "idle")
        client.xadd(keys.stream, build_entry(f"r-{name}", payload))  # type: ignore[arg-type]


def _requeued(client: redis.Redis, stream: str) -> bool:
    entries = client.xrange(stream)
    pending = client.xpending(stream, GROUP)["pending"]
    return len(entries) == 1 and pending == 0 and entries[0][1].get(b"attempt") == b"2"


def test_dead_worker_on_one_of_many_idle_queues_is_requeued_within_the_bound(
    scheduler_factory: Factory,
    worker_factory: Factory,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
) -> None:
    keyspace = KeySpace(namespace)
    names = [f"{queue}-{i:03d}" for i in range(QUEUES)]
    _populate(redis_client, keyspace, names)
    scheduler = scheduler_factory("--log-level", "DEBUG")
    # The start-up sweep has passed every queue: from here on the victim's queue is idle to
    # the scheduler until its worker marks it.
    wait_until(lambda: "swept every queue" in scheduler.log(), 30, "the first sweep")
    victim = names[QUEUES // 2]
    stream = keyspace.queue(victim).stream
    worker = wait_serving(
        worker_factory([victim], "helpers.handlers:hang_on", "--heartbeat-ttl", str(TTL_S))
    )
    assert redis_client.zscore(keyspace.watch, victim) is not None  # its heartbeat marked it
    # Running (delivery count 2: the started mark) the request that never returns.
    wait_until(
        lambda: (
            [r["times_delivered"] for r in redis_client.xpending_range(stream, GROUP, "-", "+", 1)]
            == [2]
        ),
        30,
        "the request started",
    )
    worker.kill()
    killed = time.monotonic()
    wait_until(lambda: _requeued(redis_client, stream), 30, "the request re-queued")
    elapsed = time.monotonic() - killed
    assert elapsed < BOUND_S, f"re-queued {elapsed:.1f} s after the kill (bound {BOUND_S} s)"
    # The other queues were left alone: one request each, never delivered.
    pipe = redis_client.pipeline(transaction=False)
    for name in names:
        pipe.xlen(keyspace.queue(name).stream)
    assert pipe.execute() == [1] * QUEUES
