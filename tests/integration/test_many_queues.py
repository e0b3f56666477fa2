"""Many idle queues (issue 21): the scheduler visits the queues holding work, found through
the workers' marks in ``rb:watch``, and still re-queues a dead worker's request on any of
them within the usual bound (heartbeat TTL + a few passes); ``redbatch status`` summarises
them unless ``--all``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack
import redis

from helpers import subprocess_env
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


def _populate(client: redis.Redis, keyspace: KeySpace, names: list[str], hang: str = "") -> None:
    """One request in each queue: "idle", or "hang" in queue ``hang`` (the handler's cue)."""
    for name in names:
        keys = keyspace.queue(name)
        ensure_queue(client, keyspace, keys)
        payload = msgpack.packb("hang" if name == hang else "idle")
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
    victim = names[QUEUES // 2]
    _populate(redis_client, keyspace, names, hang=victim)
    scheduler = scheduler_factory("--log-level", "DEBUG")
    # The start-up sweep has passed every queue: from here on the victim's queue is idle to
    # the scheduler until its worker marks it.
    wait_until(lambda: "swept every queue" in scheduler.log(), 30, "the first sweep")
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


def _status(redis_url: str, namespace: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "redbatch", "status", "--json", "--redis-url", redis_url,
         "--namespace", namespace, *extra],
        env=subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_status_summarises_many_queues_and_lists_them_all_on_request(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    keyspace = KeySpace(namespace)
    names = [f"{queue}-{i:02d}" for i in range(40)]
    _populate(redis_client, keyspace, names)  # one request each
    busiest, served, dead_lettered = names[3], names[30], names[35]
    for _ in range(4):
        redis_client.xadd(keyspace.queue(busiest).stream, build_entry("more", b"\x00"))  # type: ignore[arg-type]
    redis_client.xadd(keyspace.queue(dead_lettered).dead, {"id": "gone"})
    redis_client.zadd(keyspace.watch, {served: int(time.time() * 1000)})

    summary = _status(redis_url, namespace)
    assert summary["summary"] == {
        "queues": 40, "shown": 21, "complete": False, "length": 44, "delayed": 0, "dead": 1,
    }  # fmt: skip
    shown = [q["name"] for q in summary["queues"]]
    assert len(shown) == 21
    assert {busiest, served, dead_lettered} <= set(shown)  # most held, marked, most held
    by_name = {q["name"]: q for q in summary["queues"]}
    assert by_name[busiest]["waiting"] == 5  # shown queues are read in full

    every = _status(redis_url, namespace, "--all")
    assert [q["name"] for q in every["queues"]] == names
    assert every["summary"]["complete"] is True
    assert every["summary"]["length"] == 44
