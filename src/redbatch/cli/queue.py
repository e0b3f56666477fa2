"""``redbatch queue QUEUE [--shards N]``: show or grow a queue's shards (``redbatch.ops.queue``)."""

from __future__ import annotations

import click

from redbatch.cli.common import connection_options, echo_json, fail, json_option
from redbatch.errors import RedbatchError
from redbatch.ops.queue import apply
from redbatch.protocol.keys import check_queue_name, check_shard_count


@click.command("queue")
@click.argument("queue")
@click.option(
    "--shards",
    type=int,
    default=None,
    help="split the queue in this many shards (only ever grows; 1 = not sharded)",
)
@connection_options
@json_option
def command(
    queue: str,
    shards: int | None,
    redis_url: str,
    namespace: str,
    cluster: bool | None,
    as_json: bool,
) -> None:
    """Show QUEUE's settings (shards and the physical queues they make), or set them."""
    try:
        check_queue_name(queue)
        if shards is not None:
            check_shard_count(shards)
        settings = apply(redis_url, namespace, cluster, queue, shards)
    except RedbatchError as exc:
        fail(exc)
    if as_json:
        echo_json(settings)
        return
    for name, value in settings.items():
        shown = " ".join(value) if isinstance(value, list) else value
        click.echo(f"{name}: {shown}")
