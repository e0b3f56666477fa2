"""The 6-node Redis Cluster of the ``cluster`` tests, started once per session.

Run them alone with ``python3 -m pytest -m cluster``; they are part of the default run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from helpers.cluster import LocalCluster
from helpers.servers import suite_server_name
from redbatch.embedded import find_redis_server
from redbatch.servers import SYSTEM


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: runs against a real 6-node Redis Cluster (3 primaries, 3 replicas)"
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    system = suite_server_name() == SYSTEM
    if system and (find_redis_server() is None or find_redis_server("redis-cli") is None):
        message = "redis-server and redis-cli are needed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
