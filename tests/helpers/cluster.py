"""A real Redis Cluster for tests: 3 primaries and 3 replicas, each a private redis-server
(``--cluster-enabled yes``) on a free port, joined by ``redis-cli --cluster create``. The
nodes run the suite's server (``REDBATCH_TEST_SERVER``: Valkey's cluster bus and failover
are its own implementation, so valkey8 runs them all on Valkey).

The node timeout is short (1 s) so a killed primary's replica takes over within seconds;
``cluster-replica-validity-factor 0`` lets a replica take over however long ago it last
heard its primary; ``cluster-require-full-coverage no`` keeps the other slots answering
while one primary is down.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from helpers.servers import suite_server
from redbatch.embedded import EmbeddedRedis

NODE_TIMEOUT_MS = 1000
NODES = 6
READY_TIMEOUT_S = 60.0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free as well."""
    for _ in range(1000):
        # Below the ephemeral range (32768+ on Linux): a restarted node must find its port
        # free, not taken as the source port of some client's connection.
        port = random.randint(10000, 22000)
        if port not in taken and _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="redbatch-cluster-"))
        self.nodes: list[EmbeddedRedis] = []

    @property
    def url(self) -> str:
        """A seed node's URL: a cluster client discovers the others from it."""
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        taken: set[int] = set()
        try:
            for index in range(NODES):
                port = _free_cluster_port(taken)
                taken.add(port)
                node_dir = self.dir / f"node{index}"
                node_dir.mkdir()
                node = EmbeddedRedis(
                    port,
                    node_dir,
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                        "--cluster-replica-validity-factor", "0",
                        "--cluster-require-full-coverage", "no",
                    ],
                    command=suite_server().command,
                )  # fmt: skip
                self.nodes.append(node)
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                # The server's own cli (valkey-cli for Valkey) joins its nodes.
                [*suite_server().cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, capture_output=True, timeout=READY_TIMEOUT_S,
            )  # fmt: skip
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every node (even when a test failed half-way) and remove the directory."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2.0)

    def role(self, node: EmbeddedRedis) -> str:
        with self.client(node) as c:
            return str(c.info("replication")["role"])

    def primaries(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.running and self.role(n) == "master"]

    def replica_of(self, primary: EmbeddedRedis) -> EmbeddedRedis:
        for node in self.nodes:
            if node is primary or not node.running:
                continue
            with self.client(node) as c:
                info = c.info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise AssertionError(f"no replica of {primary.port}")

    def wait_healthy(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Every running node says the cluster is ok and there are 3 primaries, each with a
        replica in sync (after a failover: the old primary's replica took over)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._healthy():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the cluster did not become healthy")
            time.sleep(0.1)  # polling the cluster's own gossip: no event to wait on

    def _healthy(self) -> bool:
        running = [n for n in self.nodes if n.running]
        for node in running:
            with self.client(node) as c:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
                info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return len(self.primaries()) == 3
