"""``redbatch status``: queues and workers of one Redis and namespace, once or ``--watch``.

Data collection (``status_collect``, returns ``status_model`` dataclasses) is apart from
rendering (``status_render``, rich tables), so ``redbatch demo`` and scripts can use
``collect(client, keyspace, now)``, ``render(snapshot)`` and ``to_json(snapshot)`` from here.
Those import redis and rich when first called: ``redbatch --help`` stays fast.

``--json`` prints one object (schema 1; new fields may be added, none renamed or removed).
Ages and times are integer milliseconds, ``null`` when there is nothing to measure::

    schema        1
    redis         "host:port" (or "unix:///path") of the server, never a password
    namespace     key prefix, e.g. "rb"
    time_ms       when the snapshot was taken (unix ms, the status command's clock)
    queues        one object per queue in <namespace>:queues, by name:
      name                   queue name
      waiting                entries no worker has received yet, all lanes
      in_flight              entries delivered and not yet acked (pending in group "workers")
      delayed                retries waiting for their time (ZCARD <ns>:{Q}:delayed)
      dead                   dead-lettered entries (XLEN <ns>:{Q}:dead)
      consumers              {"alive": workers with a heartbeat for the queue,
                              "dead": group consumers without one}
      oldest_waiting_age_ms  age of the oldest waiting entry (by its stream id), or null
      lag                    XINFO GROUPS lag summed over lanes; null if any lane's is unknown
      lanes                  {"high"|"normal"|"low": {"length" (XLEN: waiting + in flight),
                              "waiting", "in_flight", "lag", "oldest_waiting_age_ms"}}
      last_minute            from the statistics slots <ns>:{Q}:stats:<slot>:
        seconds              time covered: the current, partly filled slot + 5 before (50-60 s)
        items, batches       finished in that time
        items_per_s          items / seconds
        outcomes             {"ok": n, "error": n, ...}
        wait_ms              {"p50", "p99"}: enqueue to batch start, or null without data
        service_ms           {"p50", "p99"}: the handler's time for the item's batch
    workers       one object per worker, by name:
      name, host, pid        host and pid from the heartbeat (null when it is gone)
      state                  "busy" (running a batch by its heartbeat, or holding entries) |
                             "idle" | "starting" | "draining" (from the heartbeat);
                             "dead": no heartbeat and holds entries (the scheduler re-queues
                             them); "gone": no heartbeat, holds nothing (it will be removed)
      queues                 queues it serves (a dead one: the queues whose group has it)
      in_flight              entries it holds, all queues and lanes
      batches, items         done since it started (heartbeat), null when dead
      last_batch_age_ms      since its last batch ended, null before the first one
      busy_us                microseconds its handler ran since it started (heartbeat; two
                             snapshots' difference over their time apart is its busy ratio),
                             null when dead or for a worker too old to report it
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from redbatch.config import ENV_NAMES, check_environment
from redbatch.connection import DEFAULT_URL
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from redbatch.connection import Client
    from redbatch.ops.status_model import Snapshot
    from redbatch.protocol.keys import KeySpace

MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


def collect(client: Client, keyspace: KeySpace, now: float) -> Snapshot:
    """Every queue of ``keyspace`` and its workers; ``now`` in unix seconds."""
    from redbatch.ops import status_collect  # noqa: PLC0415 - keep `redbatch --help` light

    return status_collect.collect(client, keyspace, now)


def render(snapshot: Snapshot) -> RenderableType:
    """The queues and workers tables (a rich renderable)."""
    from redbatch.ops import status_render  # noqa: PLC0415

    return status_render.render(snapshot)


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as the JSON object documented above."""
    from redbatch.ops import status_model  # noqa: PLC0415

    return status_model.to_json(snapshot)


def _snapshot(client: Client, keyspace: KeySpace, url: str) -> Snapshot:
    """``collect`` now, with Redis errors turned into one-line RedbatchErrors."""
    import redis  # noqa: PLC0415

    from redbatch.connection import describe_error  # noqa: PLC0415

    try:
        return collect(client, keyspace, time.time())
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.AuthenticationError,
        redis.exceptions.NoPermissionError,
    ) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None
    except redis.RedisError as exc:
        raise RedbatchError(describe_error(url, exc)) from None


def _watch(client: Client, keyspace: KeySpace, url: str, interval: float) -> None:
    """Redraw in place every ``interval`` s until Ctrl-C; a Redis outage is shown, not fatal."""
    from rich.console import Console, Group  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    def frame() -> RenderableType:
        stamp = time.strftime("%H:%M:%S")
        try:
            body = render(_snapshot(client, keyspace, url))
        except RedbatchError as exc:
            body = Text(f"{exc} (trying again)", style="red")
        return Group(Text(f"redbatch status at {stamp}, every {interval:g} s; Ctrl-C quits"), body)

    console = Console()
    try:
        if not console.is_terminal or console.is_dumb_terminal:
            # Live would print only the last frame into a pipe or file: append each instead.
            while True:
                console.print(frame(), "")
                time.sleep(interval)  # the refresh period, not a synchronisation
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(frame(), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: exit 0


def _run(redis_url: str, namespace: str, watch: bool, interval: float, as_json: bool) -> None:
    from redbatch.cluster_client import connect_any  # noqa: PLC0415
    from redbatch.connection import check_reachable  # noqa: PLC0415
    from redbatch.protocol.keys import KeySpace  # noqa: PLC0415

    check_environment(os.environ)
    if watch and as_json:
        raise ConfigError("--watch and --json cannot be combined: run --json once per poll")
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise ConfigError(
            f"invalid --interval {interval:g}: use {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} s"
        )
    keyspace = KeySpace(namespace)
    client = connect_any(redis_url)  # a cluster when the server is one
    try:
        check_reachable(redis_url, client)
        if watch:
            _watch(client, keyspace, redis_url, interval)
            return
        snapshot = _snapshot(client, keyspace, redis_url)
        if as_json:
            click.echo(json.dumps(to_json(snapshot), indent=2))
        else:
            from rich.console import Console  # noqa: PLC0415

            Console().print(render(snapshot))
    finally:
        client.close()


@click.command("status")
@click.option(
    "--redis-url",
    envvar=ENV_NAMES["redis_url"],
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--namespace", envvar=ENV_NAMES["namespace"], default="rb", show_default=True, show_envvar=True
)
@click.option("--watch", is_flag=True, help="redraw in place until Ctrl-C")
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="seconds between redraws"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (for scripts)")
def command(redis_url: str, namespace: str, watch: bool, interval: float, as_json: bool) -> None:
    """Show every queue (waiting, in flight, delayed, dead, consumers, oldest waiting, lag,
    the last minute's throughput and p50/p99 queue wait and service time) and every worker
    (state, host, pid, queues, counts)."""
    from redbatch.cli import EXIT_INTERRUPTED, fail  # noqa: PLC0415 - cli imports this module

    try:
        _run(redis_url, namespace, watch, interval, as_json)
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:  # Ctrl-C before a one-shot answer (a slow or far Redis)
        sys.exit(EXIT_INTERRUPTED)
