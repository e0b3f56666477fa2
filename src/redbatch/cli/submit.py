"""``redbatch submit QUEUE PAYLOAD``: one request from the shell, its result as JSON."""

from __future__ import annotations

import json
import os
from typing import Any, cast

import click

from redbatch.cli.common import connection_options, fail
from redbatch.config import check_environment
from redbatch.errors import ConfigError, RedbatchError
from redbatch.producer import Priority, Producer
from redbatch.protocol.keys import DEFAULT_PRIORITY, PRIORITIES


@click.command("submit")
@click.argument("queue")
@click.argument("payload")
@connection_options
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds")
@click.option("--id", "request_id", help="request id (default: a random one)")
@click.option(
    "--priority",
    type=click.Choice(list(PRIORITIES)),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="the lane of the queue to send it to",
)
def command(
    queue: str,
    payload: str,
    redis_url: str,
    namespace: str,
    cluster: bool | None,
    timeout: float,
    request_id: str | None,
    priority: str,
) -> None:
    """Send one JSON PAYLOAD to QUEUE, wait for its result and print it as JSON."""
    try:
        check_environment(os.environ)
        try:
            value = json.loads(payload)
        except ValueError as exc:
            raise ConfigError(f"PAYLOAD is not valid JSON: {exc}") from None
        with Producer.from_url(redis_url, namespace=namespace, cluster=cluster) as producer:
            producer.ping()
            handle = producer.submit(
                queue, value, id=request_id, timeout=timeout, priority=cast(Priority, priority)
            )
            result = handle.result(timeout)
        click.echo(json.dumps(result, default=_jsonable))
    except RedbatchError as exc:
        fail(exc)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)
