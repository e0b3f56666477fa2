"""What a Redis Cluster changes for the parts, asked here and nowhere else.

A part reads its client's ``Topology`` once (``topology_of``) and asks it by name:

- ``multi_slot``: may one command name keys of several slots? On one node yes: one
  ``XREADGROUP ... BLOCK`` over every queue, one pop over every reply list. On a cluster no:
  each queue (or shard) is a slot of its own, read or popped apart.
- ``one_node``: are all keys on one server? Then a SCAN walks every key, and a pipeline runs
  or fails whole. On a cluster nodes fail apart: ``pipelines_apart`` runs groups of
  commands (``by_node``, or per queue) so that a primary that is down, for its failover, costs
  only the commands of its own slots.
- ``lost_pause_s``: how long to pause after redis-py gave up on a lost connection.

Which clients can be driven below redis-py's client API (``deferred``) and which hold
blocking commands (``cluster.dedicated``) follow the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError

from redbatch.transport.connection import AsyncClient, Client

T = TypeVar("T")

# What a command through redis-py's cluster client raises when its node is down or its slots
# are failing over (after the client's own attempts): the other nodes are fine.
NODE_DOWN = (redis.ConnectionError, redis.TimeoutError, ClusterDownError)


@dataclass(frozen=True, slots=True)
class Topology:
    """One Redis node (``cluster`` False) or a Redis Cluster, and what that allows."""

    cluster: bool

    @property
    def multi_slot(self) -> bool:
        """One command may name keys of several slots, and so block on all of them."""
        return not self.cluster

    @property
    def one_node(self) -> bool:
        """Every key is on one server: a SCAN walks them all, a pipeline runs or fails whole."""
        return not self.cluster

    @property
    def lost_pause_s(self) -> float:
        """The pause before trying again after a lost connection that the client's retries
        did not bring back. redis-py's cluster client re-reads the slot map between its
        attempts but does not back off, and a failover takes seconds; a node client's
        retries backed off already."""
        return 0.1 if self.cluster else 0.0


ONE_NODE = Topology(cluster=False)


def topology_of(client: Client | AsyncClient) -> Topology:
    return Topology(cluster=isinstance(client, RedisCluster | AsyncRedisCluster))


def by_node(client: Client, items: Iterable[T], key: Callable[[T], Any]) -> list[list[T]]:
    """``items`` grouped by the node that serves ``key(item)``, in order of first appearance
    (as the client's slot map says now); on one node one group of all."""
    items = list(items)
    if not isinstance(client, RedisCluster):
        return [items] if items else []
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        node = client.get_node_from_key(key(item))  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, []).append(item)
    return list(groups.values())


def pipelines_apart(
    client: Client, groups: Iterable[Sequence[T]], put: Callable[[Any, T], object]
) -> tuple[list[Any], list[redis.RedisError]]:
    """Each group's commands (``put(pipe, item)`` for each of its items) in a pipeline of its
    own: redis-py's cluster pipeline raises for all of its nodes when one fails, here a node
    that is down (``NODE_DOWN``) costs only its own groups. Returns the replies of the groups
    that ran, in order, and the failures of the others; any other error raises."""
    replies: list[Any] = []
    failures: list[redis.RedisError] = []
    for group in groups:
        pipe = client.pipeline(transaction=False)
        for item in group:
            put(pipe, item)
        try:
            replies += pipe.execute()
        except NODE_DOWN as exc:
            failures.append(exc)
    return replies, failures
