"""``redbatch dlq QUEUE list | show ID | replay [ID...|--all] | purge``: the dead letters of a
queue (``rb:{QUEUE}:dead``; on a sharded queue, those of every shard too).

The Redis work lives in ``redbatch.ops.dlq.letters``, the text in ``redbatch.ops.inspect.view``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from redbatch.cli.common import echo_json, fail, json_option, node_options, opened
from redbatch.clock import now_ms
from redbatch.errors import ConfigError, RedbatchError
from redbatch.ops.dlq import letters as dead_letters
from redbatch.ops.inspect.view import payload_lines, when
from redbatch.protocol.keys import check_queue_name

# Text output cuts a reason to this many characters in ``list`` (``show`` prints it whole).
REASON_CHARS = 80


@click.group("dlq")
@click.argument("queue")
@click.pass_context
def command(ctx: click.Context, queue: str) -> None:
    """Dead letters of QUEUE: requests that ran out of attempts or broke the wire contract,
    each with the reason (list, show, replay, purge)."""
    try:
        check_queue_name(queue)
    except ConfigError as exc:
        fail(exc)
    ctx.obj = queue


@command.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@node_options
@json_option
@click.pass_obj
def list_(queue: str, limit: int, redis_url: str, namespace: str, as_json: bool) -> None:
    """The newest dead letters first: entry id, request id, when, attempt, lane, reason."""
    with opened(redis_url, namespace, "dlq") as (client, keyspace):
        total, entries = dead_letters.newest_letters(client, keyspace, queue, limit)
    if as_json:
        echo_json({"queue": queue, "total": total, "entries": entries})
        return
    _print_list(queue, total, entries)


def _print_list(queue: str, total: int, entries: list[dict[str, Any]]) -> None:
    if not total:
        click.echo(f"no dead letters in queue {queue}")
        return
    shown = f", the newest {len(entries)}" if len(entries) < total else ""
    click.echo(f"{total} dead letters in queue {queue}{shown}, newest first:")
    now = now_ms()
    rows = [
        (
            e["entry_id"],
            e["request_id"] or "-",
            when(e["dead_at_ms"], now),
            str(e["attempt"]),
            e["lane"],
            str(e["replayed"]),
            _cut(e["reason"]),
        )
        for e in entries
    ]
    header = ("ENTRY", "REQUEST", "DEAD SINCE", "ATTEMPT", "LANE", "REPLAYED", "REASON")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _cut(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


@command.command("show")
@click.argument("ident", metavar="ID")
@node_options
@json_option
@click.pass_obj
def show(queue: str, ident: str, redis_url: str, namespace: str, as_json: bool) -> None:
    """Every field of a dead letter, payload decoded. ID: its entry id, or a request id
    (every dead letter of that request, newest first)."""
    with opened(redis_url, namespace, "dlq") as (client, keyspace):
        letters = dead_letters.find_letters(client, keyspace, queue, ident)
    if as_json:
        echo_json({"queue": queue, "dead_letters": letters})
    else:
        _print_show(queue, letters)
    if not letters:
        fail(RedbatchError(f"no dead letter {ident} in queue {queue}"))


def _print_show(queue: str, letters: list[dict[str, Any]]) -> None:
    now = now_ms()
    for letter in letters:
        click.echo(f"dead letter {letter['entry_id']} of queue {queue}")
        fields = {"dead since": when(letter["dead_at_ms"], now), **letter["fields"]}
        width = max(len(name) for name in fields)
        for name, value in fields.items():
            click.echo(f"  {name.ljust(width)}  {value}")
        view = letter["payload"]
        lines = payload_lines(view) if view is not None else ["no payload field"]
        click.echo("\n".join("  " + line for line in lines))


@command.command("replay")
@click.argument("idents", nargs=-1, metavar="[ID]...")
@click.option("--all", "replay_all", is_flag=True, help="replay every dead letter of QUEUE")
@node_options
@json_option
@click.pass_obj
def replay(
    queue: str,
    idents: tuple[str, ...],
    replay_all: bool,
    redis_url: str,
    namespace: str,
    as_json: bool,
) -> None:
    """Run dead letters again: each goes back to the lane it came from as attempt 1, its
    `dead` result is deleted in the same atomic step (so the new outcome can be written), and
    it carries `replayed` (count) and `replayed_at` (ms). Its old deadline is dropped. ID: a
    dead entry id or a request id. A dead letter already replayed or gone is a no-op."""
    if bool(idents) == replay_all:
        fail(ConfigError("dlq replay: give dead letter or request ids, or --all (not both)"))
    with opened(redis_url, namespace, "dlq") as (client, keyspace):
        if replay_all:
            results = dead_letters.replay_every(client, keyspace, queue, now_ms)
        else:
            results = dead_letters.replay_letters(client, keyspace, queue, list(idents), now_ms)
    done = sum(1 for r in results if r.outcome == dead_letters.REPLAYED)
    if as_json:
        echo_json({"queue": queue, "replayed": done, "results": [r.as_dict() for r in results]})
        return
    for result in results:
        click.echo(_replay_line(queue, result))
    click.echo(f"replayed {done} dead letters of queue {queue}")


def _replay_line(queue: str, r: Any) -> str:
    letter = f"dead letter {r.dead_entry_id} ({r.request_id or 'no request id'})"
    if r.outcome == "replayed":
        return (
            f"replayed {r.request_id}: {letter} -> lane {r.lane} as entry {r.entry_id} "
            f"(replay #{r.replayed})"
        )
    if r.outcome == "not_found":
        return f"no dead letter {r.ident} in queue {queue}: nothing done"
    if r.outcome == "gone":
        return f"{letter} is gone ({r.detail}): nothing done"
    return f"not replayed: {letter}: {r.detail}"


@command.command("purge")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@node_options
@json_option
@click.pass_obj
def purge(queue: str, yes: bool, redis_url: str, namespace: str, as_json: bool) -> None:
    """Delete every dead letter of QUEUE (asks first unless --yes). Dead letters added after
    the count was shown are kept."""
    with opened(redis_url, namespace, "dlq") as (client, keyspace):
        plan = dead_letters.purge_plan(client, keyspace, queue)
        total, purged = plan.total, 0
        if not plan.empty:
            if not yes:
                if not sys.stdin.isatty():
                    fail(
                        ConfigError(
                            f"refusing to purge {total} dead letters of queue {queue} without "
                            "--yes (no terminal to confirm on)"
                        )
                    )
                click.confirm(
                    f"Delete all {total} dead letters of queue {queue}?", abort=True, err=True
                )
            purged = dead_letters.purge_planned(client, plan)
    if as_json:
        echo_json({"queue": queue, "purged": purged})
    elif plan.empty:
        click.echo(f"no dead letters in queue {queue}: nothing to purge")
    else:
        click.echo(f"purged {purged} dead letters of queue {queue}")
