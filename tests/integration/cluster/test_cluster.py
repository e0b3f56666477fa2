"""redbatch on a real Redis Cluster: detection, a sharded queue served across nodes, MOVED and
ASK while a shard's slot migrates to another node."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from helpers.cli import one_error_line, run, run_json
from helpers.cluster import LocalCluster
from helpers.workers import WorkerProcess, start_worker, wait_serving
from redbatch import AsyncProducer, Producer
from redbatch.ops.queue import set_shards
from redbatch.protocol.keys import KeySpace
from redbatch.transport.cluster import connect_any, connect_async_any, is_cluster
from redbatch.transport.topology import by_node, topology_of

pytestmark = pytest.mark.cluster
WAIT_S = 60.0


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = connect_any(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        client.close()


def test_by_node_groups_keys_as_the_cluster_holds_them(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, namespace: str
) -> None:
    """The groups of ``by_node`` are the nodes holding the keys (a SCAN of each primary on
    a connection of its own); keys of one queue (one slot) are one group."""
    assert topology_of(cluster_client).cluster
    async_client = connect_async_any(redis_cluster.url, cluster=True)
    assert topology_of(async_client).cluster
    asyncio.run(async_client.aclose())
    keys = [f"{namespace}:{{q{i}}}:a" for i in range(12)] + [f"{namespace}:{{q0}}:b"]
    for key in keys:
        cluster_client.set(key, 1)
    holders: dict[int, set[str]] = {}
    for node in redis_cluster.primaries():
        with redis_cluster.client(node) as direct:
            holders[node.port] = {k.decode() for k in direct.scan_iter(match=f"{namespace}:*")}
    held = sorted(sorted(ks) for ks in holders.values() if ks)
    assert len(held) > 1, "twelve slots all on one primary: the test proves nothing"
    grouped = by_node(cluster_client, keys, key=lambda k: k)
    assert sorted(sorted(g) for g in grouped) == held
    for key in keys:
        cluster_client.delete(key)


@pytest.fixture
def cluster_workers(
    redis_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> Iterator[list[WorkerProcess]]:
    """Start workers with ``start(queues)``; each must drain and exit 0 after the test."""
    started: list[WorkerProcess] = []
    yield started
    codes = [(w.stop(), w) for w in started]
    failures = [f"{w.name} exited {code}:\n{w.log()[-2000:]}" for code, w in codes if code]
    assert not failures, "\n".join(failures)


def test_the_same_url_finds_a_single_node_or_a_cluster(
    redis_cluster: LocalCluster, redis_url: str
) -> None:
    assert is_cluster(redis_cluster.url)
    assert not is_cluster(redis_url)
    single = connect_any(redis_url)
    try:
        assert isinstance(single, redis.Redis)
    finally:
        single.close()


def test_sharded_queue_runs_across_the_clusters_nodes(
    redis_cluster: LocalCluster,
    cluster_client: RedisCluster,
    cluster_workers: list[WorkerProcess],
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    keyspace = KeySpace(namespace)
    set_shards(cluster_client, keyspace, queue, 3)
    owners = {
        cluster_client.get_node_from_key(keyspace.shard(queue, k, 3).stream).name for k in range(3)
    }
    worker = start_worker(redis_cluster.url, namespace, [queue], log_dir=str(tmp_path))
    cluster_workers.append(worker)
    wait_serving(worker)
    with Producer.from_url(redis_cluster.url, namespace=namespace) as producer:
        assert producer.map(queue, range(600), chunk=50, timeout=WAIT_S) == list(range(600))
        handles = [producer.submit(queue, {"k": i}) for i in range(6)]
        assert {h.queue for h in handles} == {f"{queue}#{k}" for k in range(3)}
        assert [h.result(WAIT_S) for h in handles] == [{"k": i} for i in range(6)]
        assert producer.get_result(queue, handles[4].id) == {"k": 4}
    # Key names hash over the cluster: with 3 shards at least two nodes are used (the slots
    # of these names are fixed; most names spread over all three).
    assert len(owners) >= 2


def _migrate_slot(cluster: LocalCluster, client: RedisCluster, key: str) -> None:
    """Move the slot of ``key`` to another primary the way redis-cli --cluster reshard
    does: IMPORTING/MIGRATING, MIGRATE of its keys in steps, then SETSLOT NODE everywhere.
    Clients meanwhile get ASK (keys already moved) and then MOVED."""
    slot = client.keyslot(key)
    source = client.get_node_from_key(key)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    src = redis.Redis(host=source.host, port=source.port)
    dst = redis.Redis(host=target.host, port=target.port)
    try:
        src_id, dst_id = src.cluster("myid").decode(), dst.cluster("myid").decode()
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 10):
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in cluster.primaries():
            with cluster.client(node) as c:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    finally:
        src.close()
        dst.close()


def test_requests_survive_moved_and_ask_while_a_shards_slot_migrates(
    redis_cluster: LocalCluster,
    cluster_client: RedisCluster,
    cluster_workers: list[WorkerProcess],
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    keyspace = KeySpace(namespace)
    set_shards(cluster_client, keyspace, queue, 2)
    worker = start_worker(redis_cluster.url, namespace, [queue], log_dir=str(tmp_path))
    cluster_workers.append(worker)
    wait_serving(worker)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with Producer.from_url(redis_cluster.url, namespace=namespace) as producer:
                for round_ in range(20):
                    payloads = list(range(round_ * 100, round_ * 100 + 100))
                    results.append(producer.map(queue, payloads, chunk=25, timeout=WAIT_S))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    _migrate_slot(redis_cluster, cluster_client, keyspace.shard(queue, 1, 2).stream)
    thread.join(WAIT_S * 2)
    assert not thread.is_alive()
    assert not errors, errors
    assert [x for r in results for x in r] == list(range(2000))


def test_async_producer_on_a_cluster_listens_per_shard(
    redis_cluster: LocalCluster,
    cluster_client: RedisCluster,
    cluster_workers: list[WorkerProcess],
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    set_shards(cluster_client, KeySpace(namespace), queue, 3)
    worker = start_worker(redis_cluster.url, namespace, [queue], log_dir=str(tmp_path))
    cluster_workers.append(worker)
    wait_serving(worker)

    async def run() -> tuple[list[int], list[str], int]:
        async with AsyncProducer.from_url(redis_cluster.url, namespace=namespace) as producer:
            values = await producer.map(queue, range(300), chunk=20, timeout=WAIT_S)
            handles = [await producer.submit(queue, i) for i in range(3)]
            assert [await h.result(WAIT_S) for h in handles] == [0, 1, 2]
            return values, [h.queue for h in handles], len(producer._listener._tasks)

    values, shards, listeners = asyncio.run(run())
    assert values == list(range(300))
    assert sorted(shards) == [f"{queue}#{k}" for k in range(3)]
    assert listeners == 3  # one blocking pop per reply slot, not one per request


def test_queue_and_status_commands_work_on_a_cluster(
    redis_cluster: LocalCluster, namespace: str, queue: str
) -> None:
    where = ("--redis-url", redis_cluster.url, "--namespace", namespace)
    assert run_json("queue", queue, "--shards", "3", *where)["shards"] == 3
    names = {q["name"] for q in run_json("status", *where)["queues"]}
    assert {f"{queue}#{k}" for k in range(3)} <= names
    assert "shrinking is not supported" in one_error_line(
        run("queue", queue, "--shards", "2", *where), 2
    )
