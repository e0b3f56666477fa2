"""``redbatch queue QUEUE [--shards N]``: show or change a queue's shared settings, kept in
``rb:{QUEUE}:config`` (today one: ``shards``, the number of physical queues it is split in).

Growing is safe while producers and workers run: the new shards' streams and groups are
created (and listed in ``rb:queues`` for the scheduler) before the count is written, and every
party re-reads the count within ``protocol.shards.REFRESH_S``. Shrinking is refused: a
producer still using the old count, or a request waiting in a removed shard, would be left
with nobody serving it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from redbatch.errors import ConnectionFailed, RedbatchError
from redbatch.ops.inspect_cli import connection_options, echo_json, fail

if TYPE_CHECKING:
    from redbatch.connection import Client
    from redbatch.protocol.keys import KeySpace


@click.command("queue")
@click.argument("queue")
@click.option(
    "--shards",
    type=int,
    default=None,
    help="split the queue in this many shards (only ever grows; 1 = not sharded)",
)
@connection_options
def command(queue: str, shards: int | None, redis_url: str, namespace: str, as_json: bool) -> None:
    """Show QUEUE's settings (shards and the physical queues they make), or set them."""
    from redbatch.errors import ConfigError  # noqa: PLC0415
    from redbatch.protocol.keys import check_queue_name, check_shard_count  # noqa: PLC0415

    try:
        check_queue_name(queue)
        if shards is not None:
            check_shard_count(shards)
    except ConfigError as exc:
        fail(exc)
    try:
        settings = _apply(redis_url, namespace, queue, shards)
    except RedbatchError as exc:
        fail(exc)
    if as_json:
        echo_json(settings)
        return
    for name, value in settings.items():
        shown = " ".join(value) if isinstance(value, list) else value
        click.echo(f"{name}: {shown}")


def _apply(redis_url: str, namespace: str, queue: str, shards: int | None) -> dict[str, Any]:
    """Connect (a cluster client on a cluster: the shards' keys live on several nodes), set
    the count if asked, and describe the queue. Redis errors become one line (exit 3 when
    Redis cannot be reached)."""
    import redis  # noqa: PLC0415 - keep `redbatch --help` light

    from redbatch.cluster_client import connect_any  # noqa: PLC0415
    from redbatch.config import check_environment  # noqa: PLC0415
    from redbatch.connection import describe_error, ping  # noqa: PLC0415
    from redbatch.protocol.keys import KeySpace  # noqa: PLC0415

    check_environment(os.environ)
    keyspace = KeySpace(namespace)
    client = connect_any(redis_url, retries=1)
    try:
        ping(client, redis_url)
        if shards is not None and shards != _current(client, keyspace, queue):
            set_shards(client, keyspace, queue, shards)
        return describe(keyspace, queue, _current(client, keyspace, queue))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectionFailed(describe_error(redis_url, exc)) from None
    except redis.ResponseError as exc:
        raise RedbatchError(describe_error(redis_url, exc)) from None
    finally:
        client.close()


def describe(keyspace: KeySpace, queue: str, shards: int) -> dict[str, Any]:
    from redbatch.protocol.shards import served_names  # noqa: PLC0415

    served = served_names(queue, shards)
    return {
        "queue": queue,
        "config": keyspace.config(queue),
        "shards": shards,
        "physical_queues": list(served),
        "streams": [keyspace.queue(name).stream for name in served],
    }


def _current(client: Client, keyspace: KeySpace, queue: str) -> int:
    from redbatch.protocol.shards import read_shards  # noqa: PLC0415

    return read_shards(client, keyspace, queue)


def set_shards(client: Client, keyspace: KeySpace, queue: str, shards: int) -> None:
    """Grow ``queue`` to ``shards`` shards: create them, then publish the count (under WATCH,
    so two operators at once cannot shrink it by accident). ConfigError to shrink."""
    import redis as redis_  # noqa: PLC0415

    from redbatch.errors import ConfigError  # noqa: PLC0415
    from redbatch.protocol.keys import shard_names  # noqa: PLC0415
    from redbatch.protocol.shards import SHARDS_FIELD, parse_shards  # noqa: PLC0415
    from redbatch.protocol.streams import ensure_queue  # noqa: PLC0415

    for name in shard_names(queue, shards):
        ensure_queue(client, keyspace, keyspace.queue(name))
    key = keyspace.config(queue)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                current = parse_shards(queue, pipe.hget(key, SHARDS_FIELD))
                if shards < current:
                    raise ConfigError(
                        f"queue {queue} has {current} shards: shrinking is not supported "
                        f"(requests in the removed shards would be left unserved)"
                    )
                pipe.multi()
                pipe.hset(key, SHARDS_FIELD, str(shards))
                pipe.execute()
                return
            except redis_.WatchError:
                continue  # someone else changed it meanwhile: judge again
