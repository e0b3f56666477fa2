"""``redbatch inspect ID``: where a request is, in one queue or in every known queue (the
Redis work in ``redbatch.ops.inspect.find``, the text in ``redbatch.ops.inspect.view``)."""

from __future__ import annotations

from typing import Any

import click

from redbatch.cli.common import echo_json, fail, json_option, node_options, opened
from redbatch.clock import now_ms
from redbatch.errors import RedbatchError
from redbatch.ops.inspect import find, view
from redbatch.protocol.keys import check_queue_name, check_request_id


@click.command("inspect")
@click.argument("request_id", metavar="ID")
@click.option("--queue", help="look in this queue only (default: every queue in rb:queues)")
@node_options
@json_option
def command(
    request_id: str,
    queue: str | None,
    redis_url: str,
    namespace: str,
    as_json: bool,
) -> None:
    """Where request ID is: waiting in a lane, held by a worker (since when, which attempt),
    delayed for a retry, finished (with its outcome and payload), cancelled, or dead (with the
    reason). A request seen in several places (during a move) is shown in each.

    Exit 0 when found anywhere, 1 when not (a result past its TTL is gone: not found)."""
    try:
        check_request_id(request_id)
        if queue is not None:
            check_queue_name(queue)
    except RedbatchError as exc:
        fail(exc)
    with opened(redis_url, namespace, "inspect") as (client, keyspace):
        queues, sightings = find.find_everywhere(client, keyspace, request_id, queue)
    now = now_ms()
    if as_json:
        echo_json({"request_id": request_id, "queues": queues, "found": sightings})
    else:
        _print_text(request_id, sightings, now)
    if not sightings:
        where = f"queue {queue}" if queue is not None else _queues_phrase(queues, namespace)
        fail(RedbatchError(f"no request {request_id} in {where}"))


def _queues_phrase(queues: list[str], namespace: str) -> str:
    if not queues:
        return f"any queue (none known in namespace {namespace})"
    shown = ", ".join(queues[:5]) + (", ..." if len(queues) > 5 else "")
    return f"any of the {len(queues)} queues of namespace {namespace} ({shown})"


def _print_text(request_id: str, sightings: list[dict[str, Any]], now: int) -> None:

    queue = None
    for sighting in sightings:
        if sighting["queue"] != queue:
            queue = sighting["queue"]
            click.echo(f"request {request_id} in queue {queue}:")
        for line in view.sighting_lines(sighting, now):
            click.echo(line)
