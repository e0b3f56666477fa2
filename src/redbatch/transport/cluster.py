"""Clients for one Redis node or a Redis Cluster, chosen from the server or a setting.

The same URL serves both: ``connect_any`` asks the server (its HELLO reply) unless told, and
returns redis-py's ``Redis`` or its cluster client. On a cluster every multi-key command,
pipeline transaction and script of redbatch names keys of one queue (one ``{Q}`` hash tag,
one slot); redis-py routes them by that slot and follows MOVED/ASK and failovers itself
(re-reading the slot map), ``CLUSTER_ATTEMPTS`` times per command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster

from redbatch.errors import ConfigError, ConnectionFailed
from redbatch.transport.connection import (
    DEFAULT_SOCKET_TIMEOUT_S,
    AsyncClient,
    Client,
    backoff_retry,
    backoff_retry_async,
    check_url,
    client_options,
    clone_kwargs,
    connect,
    connect_async,
    describe_error,
)

# Attempts of one command on a cluster after a lost node, MOVED or CLUSTERDOWN (redis-py
# re-reads the slot map between them). A cluster client cannot retry "for ever": its count
# is the number of attempts.
CLUSTER_ATTEMPTS = 20


class _SlotPipeline(ClusterPipeline):
    """A cluster pipeline that allows MGET. redis-py refuses it in every cluster pipeline
    since its keys might span slots; ours name keys of one queue (one ``{Q}`` hash tag),
    and a cross-slot MGET would still be refused, by redis-py's slot check (CROSSSLOT)."""

    def mget(self, keys: Any, *args: Any) -> Any:
        names = [keys, *args] if isinstance(keys, str | bytes) else [*keys, *args]
        return self.execute_command("MGET", *names)  # type: ignore[no-untyped-call]


class QueueCluster(RedisCluster):
    """redis-py's cluster client whose pipelines take same-slot MGET (``_SlotPipeline``)."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise redis.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _SlotPipeline(  # the arguments of RedisCluster.pipeline (redis-py 8)
            nodes_manager=self.nodes_manager,
            commands_parser=self.commands_parser,
            startup_nodes=self.nodes_manager.startup_nodes,  # type: ignore[arg-type]
            result_callbacks=self.result_callbacks,
            cluster_response_callbacks=self.cluster_response_callbacks,
            read_from_replicas=self.read_from_replicas,
            load_balancing_strategy=self.load_balancing_strategy,
            reinitialize_steps=self.reinitialize_steps,
            retry=self.retry,
            lock=self._lock,
            transaction=transaction,
            event_dispatcher=self._event_dispatcher,
        )


def _cluster_mode(reply: Any) -> bool:
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    return bool(fields.get(b"mode") == b"cluster")


def is_cluster(url: str, client_name: str | None = None) -> bool:
    """Whether the server at ``url`` runs in cluster mode: the ``mode`` of its HELLO reply
    (what ``INFO cluster`` also says). HELLO, unlike INFO, is allowed to every ACL user and
    leaves nothing in ``ACL LOG``; ``HELLO 2`` keeps the protocol this probe speaks. The probe
    names itself ``client_name`` (as the part's other connections)."""
    probe = redis.Redis.from_url(
        check_url(url), socket_connect_timeout=5.0, socket_timeout=5.0, client_name=client_name
    )
    try:
        reply = probe.execute_command("HELLO", 2)  # type: ignore[no-untyped-call]
    except redis.ResponseError:
        return False  # before Redis 6 (no HELLO), and no cluster either for redbatch
    finally:
        probe.close()
    return _cluster_mode(reply)


async def is_cluster_async(url: str, client_name: str | None = None) -> bool:
    """``is_cluster`` on the event loop: the probe never blocks it."""
    probe = redis.asyncio.Redis.from_url(
        check_url(url), socket_connect_timeout=5.0, socket_timeout=5.0, client_name=client_name
    )
    try:
        reply = await probe.execute_command("HELLO", 2)  # type: ignore[no-untyped-call]
    except redis.ResponseError:
        return False
    finally:
        await probe.aclose()
    return _cluster_mode(reply)


def connect_any(
    url: str,
    *,
    cluster: bool | None = None,
    retries: int = 3,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    max_connections: int | None = None,
    client_name: str | None = None,
) -> Client:
    """A sync client on ``url``: a ``RedisCluster`` when the server is a cluster node (or
    ``cluster`` says so), else as ``connect``. ``cluster=None`` asks the server.
    ``client_name``: every connection names itself so (``CLIENT SETNAME``);
    ``max_connections``: the pool's size (per node on a cluster)."""
    cluster = _cluster_or_ask(url, cluster, client_name)
    pool = pool_options(max_connections, client_name)
    if not cluster:
        return connect(url, retries=retries, socket_timeout=socket_timeout, **pool)
    return connect_cluster(url, socket_timeout=socket_timeout, **pool)


def _cluster_or_ask(url: str, cluster: bool | None, client_name: str | None) -> bool:
    """``cluster`` as given, or (None) the server's answer; a server that does not answer
    the probe is a ConnectionFailed."""
    if cluster is not None:
        return cluster
    try:
        return is_cluster(url, client_name)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None


def pool_options(max_connections: int | None, client_name: str | None) -> dict[str, Any]:
    """The pool keywords given (left out when None: each client's own default)."""
    options: dict[str, Any] = {}
    if max_connections is not None:
        options["max_connections"] = check_max_connections(max_connections)
    if client_name is not None:
        options["client_name"] = client_name
    return options


def check_max_connections(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_connections must be a positive integer, got {value!r}")
    return value


def connect_cluster(
    url: str, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S, **pool: Any
) -> RedisCluster:
    """A cluster client seeded from the node at ``url`` (it discovers the others)."""
    options = client_options(backoff_retry(CLUSTER_ATTEMPTS), socket_timeout) | pool
    # The cluster client retries (re-reading the slot map); its node connections never do.
    retry = options.pop("retry")
    del options["retry_on_error"]
    try:
        return QueueCluster.from_url(check_url(url), retry=retry, **options)
    except (redis.ConnectionError, redis.TimeoutError, redis.RedisClusterException) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None


# Node connection settings redis-py's cluster client adds itself (or cannot be given).
_CLUSTER_OWN = ("redis_connect_func", "oss_cluster_maint_notifications_handler", "db", "retry")


def dedicated(
    client: Client, *, socket_timeout: float, retries: int, client_name: str | None = None
) -> Client:
    """A client like ``client`` for blocking reads, so they never take a connection its
    other users need: on one node a pool of one connection; on a cluster a cluster client
    of its own (its blocking commands each hold a connection of that client's node pools).
    ``client_name``: its connections' ``CLIENT SETNAME`` (None: as ``client``'s)."""
    named = {} if client_name is None else {"client_name": client_name}
    if isinstance(client, RedisCluster):
        kwargs = dict(client.nodes_manager.connection_kwargs) | named
        for name in _CLUSTER_OWN:
            kwargs.pop(name, None)
        kwargs["socket_timeout"] = socket_timeout
        nodes = [ClusterNode(node.host, node.port) for node in _nodes(client)]  # type: ignore[no-untyped-call]
        return QueueCluster(startup_nodes=nodes, retry=backoff_retry(CLUSTER_ATTEMPTS), **kwargs)
    pool = client.connection_pool
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            max_connections=1,
            retry=backoff_retry(retries),
            **(clone_kwargs(client, socket_timeout=socket_timeout) | named),
        )
    )


# An asyncio cluster client gets no dedicated twin: its blocking commands each hold a
# connection of its node pools, whose read timeout is connection.DEFAULT_SOCKET_TIMEOUT_S, so
# they block at most this long (s).
SHARED_BLOCK_S = 2.0


@dataclass(frozen=True, slots=True)
class AsyncBlocking:
    """Where an asyncio part runs its blocking commands, and how long each may block."""

    client: AsyncClient
    block_s: float

    async def aclose(self) -> None:
        """Close its connections: on one node its own; on a cluster they are the client's it
        was made for (closed with that one)."""
        if isinstance(self.client, redis.asyncio.Redis):
            await self.client.connection_pool.disconnect()
            await self.client.aclose()


def dedicated_async(
    client: AsyncClient, *, block_s: float, socket_timeout: float, retries: int, client_name: str
) -> AsyncBlocking:
    """``dedicated`` for asyncio: on one node a pool of one connection, blocking up to
    ``block_s``; on a cluster ``client`` itself, blocking up to ``SHARED_BLOCK_S``."""
    if isinstance(client, AsyncRedisCluster):
        return AsyncBlocking(client, min(block_s, SHARED_BLOCK_S))
    pool = client.connection_pool
    kwargs = clone_kwargs(client, socket_timeout=socket_timeout) | {"client_name": client_name}
    one = redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(
            connection_class=pool.connection_class,
            max_connections=1,
            retry=backoff_retry_async(retries),
            **kwargs,
        )
    )
    return AsyncBlocking(one, block_s)


def _nodes(client: RedisCluster) -> list[ClusterNode]:
    nodes: list[ClusterNode] = client.get_nodes()  # type: ignore[no-untyped-call]
    return nodes


def disconnect(client: Client) -> None:
    """Close every connection of ``client`` now, even one blocked in a read by another
    thread (which then gets a ConnectionError)."""
    if isinstance(client, RedisCluster):
        for node in _nodes(client):
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
        return
    client.connection_pool.disconnect()


async def connect_async_lazily(
    url: str, *, cluster: bool | None = None, **options: Any
) -> AsyncClient:
    """``connect_async_any`` with the cluster question asked on the event loop (an asyncio
    probe), so an app's loop never blocks on a Redis that does not answer."""
    if cluster is None:
        try:
            cluster = await is_cluster_async(url, options.get("client_name"))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionFailed(describe_error(url, exc)) from None
    return connect_async_any(url, cluster=cluster, **options)


def connect_async_any(
    url: str,
    *,
    cluster: bool | None = None,
    retries: int = 3,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    max_connections: int | None = None,
    client_name: str | None = None,
) -> AsyncClient:
    """Like ``connect_any``, for asyncio (the server is asked with a short sync probe;
    ``connect_async_lazily`` asks it without blocking the loop)."""
    cluster = _cluster_or_ask(url, cluster, client_name)
    pool = pool_options(max_connections, client_name)
    if not cluster:
        return connect_async(url, retries=retries, socket_timeout=socket_timeout, **pool)
    try:
        return AsyncRedisCluster.from_url(
            check_url(url),
            retry=backoff_retry_async(CLUSTER_ATTEMPTS),
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            socket_keepalive=True,
            **pool,
        )
    except redis.RedisClusterException as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None
