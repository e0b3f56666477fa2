"""``redbatch dashboard`` on a real 6-node Redis Cluster: a sharded queue spread over the
nodes is one row; its dead letters (in several shards, so several nodes) are listed,
replayed and purged through the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import run_json
from helpers.cluster import LocalCluster
from helpers.dashboard import http, start_dashboard
from helpers.entries import now_ms, pack
from redbatch import Producer
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import KeySpace
from redbatch.transport.cluster import connect_any

pytestmark = pytest.mark.cluster
TOKEN = {"Authorization": "Bearer cluster-test-token-0123456789"}


def test_the_dashboard_reads_and_replays_on_a_cluster(
    redis_cluster: LocalCluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    where = ("--redis-url", redis_cluster.url, "--namespace", namespace)
    assert run_json("queue", queue, "--shards", "3", *where)["shards"] == 3
    with Producer.from_url(redis_cluster.url, namespace=namespace) as producer:
        for i in range(30):
            producer.submit(queue, i)
    client = connect_any(redis_cluster.url)
    keyspace = KeySpace(namespace)
    for k in range(3):  # one dead letter in each shard: each on its own slot
        fields = build_entry(f"d{k}", pack({"n": k}), enq=now_ms())
        fields["reason"] = "test"
        client.xadd(keyspace.queue(f"{queue}#{k}").dead, fields)  # type: ignore[arg-type]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN["Authorization"].split()[1])
    dashboard = start_dashboard(*where, "--allow-writes", "--token-file", str(token_file))
    try:
        base = f"{dashboard.url}api/"
        [row] = http(base + "overview").body["queues"]
        assert (row["name"], row["waiting"], row["dead"]) == (queue, 30, 3)
        assert {f"{queue}#{k}" for k in range(3)} <= set(row["shards"])
        assert http(base + "status").body["schema"] == 1
        listed = http(base + f"queues/{queue}/dead").body
        assert sorted(e["request_id"] for e in listed["entries"]) == ["d0", "d1", "d2"]
        replay = http(base + f"queues/{queue}/dead/replay", body={"ids": ["d1"]}, headers=TOKEN)
        assert replay.status == 200 and replay.body["replayed"] == 1, replay.body
        purge = http(base + f"queues/{queue}/dead/purge", body={}, headers=TOKEN)
        assert purge.body == {"queue": queue, "purged": 2}
        assert http(base + "requests/d1").body["found"][0]["state"] == "waiting"
    finally:
        client.close()
        assert dashboard.stop() == 0
