"""On a Redis Cluster a worker's connections carry its name on each node it reads
(``client_name`` reaches the node connections of redis-py's cluster client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from helpers.cluster import LocalCluster
from helpers.workers import start_worker, wait_serving, wait_until
from redbatch.ops.queue import set_shards
from redbatch.protocol.keys import KeySpace
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import connection_name

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = connect_any(redis_cluster.url, client_name=connection_name("ops", "test"))
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        client.close()


def test_a_workers_connections_are_named_on_each_node_it_reads(
    redis_cluster: LocalCluster,
    operator: RedisCluster,
    namespace: str,
    queue: str,
    tmp_path: Path,
) -> None:
    keyspace = KeySpace(namespace)
    set_shards(operator, keyspace, queue, 3)
    owners = {operator.get_node_from_key(keyspace.shard(queue, k, 3).stream).name for k in range(3)}
    worker = start_worker(redis_cluster.url, namespace, [queue], log_dir=str(tmp_path))
    try:
        wait_serving(worker)
        expected = connection_name("worker", worker.name)

        nodes = [n for n in redis_cluster.primaries() if f"127.0.0.1:{n.port}" in owners]
        assert len(nodes) == len(owners) >= 2, (owners, nodes)

        def named_on_owners() -> bool:
            # The session's cluster is shared with other tests: only this worker's name is
            # looked for, not that every connection there is named.
            for node in nodes:
                with redis_cluster.client(node) as client:
                    if expected not in {c["name"] for c in client.client_list()}:
                        return False
            return True

        wait_until(named_on_owners, 30.0, f"{expected} on {owners}")
    finally:
        assert worker.stop() == 0, worker.log()
