"""transport.topology: what one node allows that a cluster does not, and pipelines run apart so
that a node that is down costs only its own commands (the cluster side: tests/integration/
cluster/test_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ClusterDownError

from redbatch.transport.topology import (
    ONE_NODE,
    Topology,
    by_node,
    pipelines_apart,
    topology_of,
)


def test_one_node_allows_what_a_cluster_does_not() -> None:
    cluster = Topology(cluster=True)
    assert ONE_NODE.multi_slot and ONE_NODE.one_node
    assert not cluster.multi_slot and not cluster.one_node
    assert (ONE_NODE.lost_pause_s, cluster.lost_pause_s) == (0.0, 0.1)


def test_a_node_client_is_one_node() -> None:
    # Neither client connects before its first command.
    assert topology_of(redis.Redis()) == ONE_NODE
    assert topology_of(redis.asyncio.Redis()) == ONE_NODE


def test_on_one_node_everything_is_one_group() -> None:
    assert by_node(redis.Redis(), ["a", "b", "c"], key=str) == [["a", "b", "c"]]
    assert by_node(redis.Redis(), [], key=str) == []


class _Pipe:
    def __init__(self, fails: dict[str, Exception]) -> None:
        self._fails = fails
        self.items: list[str] = []

    def execute(self) -> list[str]:
        for item in self.items:
            if item in self._fails:
                raise self._fails[item]
        return [f"ran {item}" for item in self.items]


class _Client:
    """Pipelines whose execute fails when they hold an item named in ``fails``."""

    def __init__(self, fails: dict[str, Exception]) -> None:
        self._fails = fails

    def pipeline(self, transaction: bool) -> _Pipe:
        assert transaction is False
        return _Pipe(self._fails)


def _put(pipe: Any, item: str) -> None:
    pipe.items.append(item)


def test_a_group_whose_node_is_down_costs_only_its_own_commands() -> None:
    down = ClusterDownError("CLUSTERDOWN The cluster is down")
    lost = redis.ConnectionError("lost")
    client: Any = _Client({"b1": down, "c1": lost})
    groups = [["a1", "a2"], ["b1", "b2"], ["c1"], ["d1"]]
    replies, failures = pipelines_apart(client, groups, _put)
    assert replies == ["ran a1", "ran a2", "ran d1"]
    assert failures == [down, lost]


def test_an_error_other_than_a_node_down_raises() -> None:
    client: Any = _Client({"b": redis.ResponseError("NOGROUP no such group")})
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        pipelines_apart(client, [["a"], ["b"], ["c"]], _put)
