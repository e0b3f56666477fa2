"""Sharded queues on one Redis node: ``redbatch queue --shards``, producers spreading over
the shards, workers serving all of them (also shards added while they run), the scheduler
and ``status`` seeing every shard."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import redis

from helpers.cli import one_error_line, run, run_json
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer
from redbatch.ops.queue import set_shards
from redbatch.protocol.keys import GROUP, KeySpace

Factory = Callable[..., WorkerProcess]
WAIT_S = 30.0


def test_queue_command_shows_grows_and_refuses_to_shrink(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    where = ("--redis-url", redis_url, "--namespace", namespace)
    shown = run_json("queue", queue, *where)
    assert shown["shards"] == 1
    assert shown["physical_queues"] == [queue]
    assert shown["streams"] == [f"{namespace}:{{{queue}}}:stream"]

    grown = run_json("queue", queue, "--shards", "3", *where)
    assert grown["shards"] == 3
    assert grown["physical_queues"] == [queue, f"{queue}#0", f"{queue}#1", f"{queue}#2"]
    assert redis_client.hget(f"{namespace}:{{{queue}}}:config", "shards") == b"3"
    # The shards exist (stream and group) before anyone is told of them.
    for k in range(3):
        stream = f"{namespace}:{{{queue}#{k}}}:stream"
        assert redis_client.xinfo_groups(stream)[0]["name"] == GROUP.encode()
    assert {f"{queue}#{k}".encode() for k in range(3)} <= redis_client.smembers(
        f"{namespace}:queues"
    )

    text = run("queue", queue, *where)
    assert text.returncode == 0 and "shards: 3" in text.stdout

    line = one_error_line(run("queue", queue, "--shards", "2", *where), 2)
    assert "shrinking is not supported" in line
    line = one_error_line(run("queue", queue, "--shards", "0", *where), 2)
    assert "invalid shard count 0" in line
    line = one_error_line(run("queue", "bad#name", *where), 2)
    assert "invalid queue name" in line
    assert redis_client.hget(f"{namespace}:{{{queue}}}:config", "shards") == b"3"


def test_producer_spreads_over_shards_and_one_worker_serves_them_all(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keyspace = KeySpace(namespace)
    set_shards(redis_client, keyspace, queue, 3)
    wait_serving(worker_factory([queue]))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [producer.submit(queue, {"i": i}) for i in range(9)]
        assert [h.queue for h in handles] == [f"{queue}#{i % 3}" for i in range(9)]
        assert [h.result(WAIT_S) for h in handles] == [{"i": i} for i in range(9)]
        for handle in handles:  # each result is in its own shard's keys
            assert redis_client.hget(keyspace.queue(handle.queue).result(handle.id), "status")

        keyed = [producer.submit(queue, i, shard_key="user-7") for i in range(4)]
        assert len({h.queue for h in keyed}) == 1
        assert [h.result(WAIT_S) for h in keyed] == [0, 1, 2, 3]

        # map spreads its chunks: 6 chunks of 50, two per shard.
        before = {k: _results(redis_client, keyspace, f"{queue}#{k}") for k in range(3)}
        assert producer.map(queue, range(300), chunk=50, timeout=WAIT_S) == list(range(300))
        for k in range(3):
            assert _results(redis_client, keyspace, f"{queue}#{k}") - before[k] == 100

    # Another process finds a result (and cancels) by queue and id, whatever the shard.
    with Producer.from_url(redis_url, namespace=namespace) as other:
        assert other.get_result(queue, handles[5].id) == {"i": 5}
        other.cancel(queue, "not-yet-submitted")
        for k in range(3):
            assert redis_client.exists(keyspace.queue(f"{queue}#{k}").cancel("not-yet-submitted"))


def _results(client: redis.Redis, keyspace: KeySpace, name: str) -> int:
    pattern = keyspace.queue(name).result("*").replace("{", "\\{").replace("}", "\\}")
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def test_shards_added_while_workers_run_are_served(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keyspace = KeySpace(namespace)
    wait_serving(worker_factory([queue]))
    with Producer.from_url(redis_url, namespace=namespace) as early:
        assert early.call(queue, "plain", timeout=WAIT_S) == "plain"
        set_shards(redis_client, keyspace, queue, 2)
        # This producer still uses the old count for a few seconds: its request goes to the
        # unsharded keys, which a sharded queue's workers keep serving.
        assert early.submit(queue, "late").result(WAIT_S) == "late"
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [producer.submit(queue, i) for i in range(4)]
        assert {h.queue for h in handles} == {f"{queue}#0", f"{queue}#1"}
        # The worker started before the shards existed: it finds them by re-reading the
        # config (every 5 s), well within the wait.
        assert [h.result(WAIT_S) for h in handles] == [0, 1, 2, 3]


def test_scheduler_requeues_a_dead_workers_entries_in_shard_2(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    scheduler_factory: Factory,
    worker_factory: Factory,
) -> None:
    keyspace = KeySpace(namespace)
    set_shards(redis_client, keyspace, queue, 3)
    keys = keyspace.queue(f"{queue}#2")
    for i in range(3):
        redis_client.xadd(keys.stream, {"id": f"r{i}", "ct": "json", "payload": f'{{"n": {i}}}'})
    # A "worker" that read them, marked them started and died (no heartbeat).
    taken = redis_client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=3)
    entry_ids = [entry_id for entry_id, _ in taken[0][1]]
    redis_client.xclaim(keys.stream, GROUP, "ghost", 0, entry_ids, justid=True, retrycount=2)
    scheduler_factory()
    worker_factory([queue])

    def finished() -> list[bytes | None]:
        statuses = [redis_client.hget(keys.result(f"r{i}"), "status") for i in range(3)]
        return statuses if all(statuses) else []

    assert wait_until(finished, WAIT_S, "the re-queued requests to finish") == [b"ok"] * 3
    assert redis_client.hget(keys.result("r0"), "attempt") == b"2"

    status = run_json("status", "--redis-url", redis_url, "--namespace", namespace)
    names = {q["name"] for q in status["queues"]}
    assert {queue, f"{queue}#0", f"{queue}#1", f"{queue}#2"} <= names


def test_dlq_lists_shows_replays_and_purges_every_shard(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    where = ("--redis-url", redis_url, "--namespace", namespace)
    run_json("queue", queue, "--shards", "3", *where)
    keyspace = KeySpace(namespace)
    for k in range(3):
        dead = keyspace.queue(f"{queue}#{k}").dead
        redis_client.xadd(dead, {"id": f"d{k}", "reason": "test", "payload": msgpack.packb(k)})

    listed = run_json("dlq", queue, "list", *where)
    assert listed["total"] == 3
    assert {e["request_id"] for e in listed["entries"]} == {"d0", "d1", "d2"}
    shown = run_json("dlq", queue, "show", "d2", *where)
    assert [letter["payload"]["value"] for letter in shown["dead_letters"]] == [2]

    replayed = run_json("dlq", queue, "replay", "d1", *where)
    assert replayed["replayed"] == 1
    assert [r["outcome"] for r in replayed["results"]] == ["replayed"]
    # Back in the stream of the shard it died in, not anywhere else.
    assert redis_client.xlen(keyspace.queue(f"{queue}#1").stream) == 1
    assert redis_client.xlen(keyspace.queue(f"{queue}#0").stream) == 0

    missing = run_json("dlq", queue, "replay", "nobody", *where)
    assert [r["outcome"] for r in missing["results"]] == ["not_found"]
    assert run_json("dlq", queue, "purge", "--yes", *where) == {"queue": queue, "purged": 2}
    assert sum(redis_client.xlen(keyspace.queue(f"{queue}#{k}").dead) for k in range(3)) == 0
