"""``redbatch status``: queues and workers of one Redis and namespace, once or ``--watch``
(what it collects and its JSON: ``redbatch.ops.status``)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import click
import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from redbatch.cli.common import EXIT_INTERRUPTED, connection_options, fail, on_stop_signals
from redbatch.config import check_environment
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.ops.status import SUMMARY_ROWS, Snapshot, collect, render, to_json
from redbatch.protocol.keys import KeySpace
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import Client, check_reachable, connection_name, describe_error

MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


def _snapshot(client: Client, keyspace: KeySpace, url: str, every: bool) -> Snapshot:
    """``collect`` now, with Redis errors turned into one-line RedbatchErrors."""
    try:
        return collect(client, keyspace, time.time(), limit=None if every else SUMMARY_ROWS)
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.AuthenticationError,
        redis.exceptions.NoPermissionError,
    ) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None
    except redis.RedisError as exc:
        raise RedbatchError(describe_error(url, exc)) from None


def _watch(
    client: Client,
    keyspace: KeySpace,
    url: str,
    interval: float,
    every: bool,
    stop: threading.Event,
) -> None:
    """Redraw in place every ``interval`` s until Ctrl-C or SIGTERM (exit 0; a second one quits
    at once, mid-poll); a Redis outage is shown, not fatal."""

    def frame() -> RenderableType:
        stamp = time.strftime("%H:%M:%S")
        try:
            body = render(_snapshot(client, keyspace, url, every))
        except RedbatchError as exc:
            body = Text(f"{exc} (trying again)", style="red")
        return Group(Text(f"redbatch status at {stamp}, every {interval:g} s; Ctrl-C quits"), body)

    console = Console()
    if not console.is_terminal or console.is_dumb_terminal:
        # Live would print only the last frame into a pipe or file: append each instead.
        while not stop.is_set():
            console.print(frame(), "")
            stop.wait(interval)  # the refresh period, cut short by Ctrl-C
        return
    with Live(console=console, auto_refresh=False) as live:
        while not stop.is_set():
            live.update(frame(), refresh=True)
            stop.wait(interval)


def _run(
    redis_url: str,
    namespace: str,
    cluster: bool | None,
    watch: bool,
    interval: float,
    as_json: bool,
    every: bool,
) -> None:
    check_environment(os.environ)
    if watch and as_json:
        raise ConfigError("--watch and --json cannot be combined: run --json once per poll")
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise ConfigError(
            f"invalid --interval {interval:g}: use {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} s"
        )
    keyspace = KeySpace(namespace)
    stop = threading.Event()
    if watch:
        # Ctrl-C sets ``stop`` rather than raising KeyboardInterrupt: an interrupt that lands in
        # a finaliser (redis-py's ConnectionPool.__del__) is swallowed, and the watch ran on.
        on_stop_signals(stop.set)
    # A cluster client when the server is one.
    client = connect_any(redis_url, cluster=cluster, client_name=connection_name("ops", "status"))
    try:
        check_reachable(redis_url, client)
        if watch:
            _watch(client, keyspace, redis_url, interval, every, stop)
            return
        snapshot = _snapshot(client, keyspace, redis_url, every)
        if as_json:
            click.echo(json.dumps(to_json(snapshot), indent=2))
        else:
            Console().print(render(snapshot))
    finally:
        client.close()


@click.command("status")
@connection_options
@click.option("--watch", is_flag=True, help="redraw in place until Ctrl-C")
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="seconds between redraws"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (for scripts)")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help=f"every queue in detail (default above {SUMMARY_ROWS} queues: totals, and the served "
    f"queues and the {SUMMARY_ROWS} holding most)",
)
def command(
    redis_url: str,
    namespace: str,
    cluster: bool | None,
    watch: bool,
    interval: float,
    as_json: bool,
    every: bool,
) -> None:
    """Show every queue (waiting, in flight, delayed, dead, consumers, oldest waiting, lag,
    the last minute's throughput and p50/p99 queue wait and service time) and every worker
    (state, host, pid, queues, counts). Above 20 queues: totals over all, details of the
    served ones and the 20 holding most; ``--all`` for every queue. ``--json``: the object
    described in ``redbatch.ops.status``."""
    try:
        _run(redis_url, namespace, cluster, watch, interval, as_json, every)
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:  # Ctrl-C before a one-shot answer (a slow or far Redis)
        sys.exit(EXIT_INTERRUPTED)
