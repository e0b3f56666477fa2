"""``redbatch dashboard``: the command-line side of ``redbatch.dashboard`` (whose server
imports Starlette and uvicorn, the extra, only when it starts)."""

from __future__ import annotations

import click

from redbatch.cli.common import EXIT_INTERRUPTED, connection_options, fail
from redbatch.dashboard.server import Settings, serve
from redbatch.errors import ConfigError, RedbatchError

DEFAULT_PORT = 8484


@click.command("dashboard")
@connection_options
@click.option(
    "--embedded", is_flag=True, help="start a private redis-server and show it (not --redis-url)"
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; anything but loopback shows the queues to the network",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="0: a free port (printed)",
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="seconds between refreshes"
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="let holders of the token replay and purge dead letters (default: read-only)",
)
@click.option(
    "--token-file",
    metavar="PATH",
    help="with --allow-writes: the token is this file's content (default: a new one, printed)",
)
def command(
    redis_url: str,
    namespace: str,
    cluster: bool | None,
    embedded: bool,
    host: str,
    port: int,
    interval: float,
    allow_writes: bool,
    token_file: str | None,
) -> None:
    """Serve a web page of the queues (live counts, lanes and shards, the last minutes'
    throughput, latency and batch sizes), the workers, dead letters (list, show, replay,
    purge) and request look-up, on 127.0.0.1:8484 by default; read-only unless
    --allow-writes. Needs the extra: pip install 'redbatch[dashboard]'."""
    source = click.get_current_context().get_parameter_source("redis_url")
    try:
        if embedded and source == click.core.ParameterSource.COMMANDLINE:
            raise ConfigError("give --embedded or --redis-url, not both")
        settings = Settings(
            redis_url=None if embedded else redis_url,
            namespace=namespace,
            host=host,
            port=port,
            interval_s=interval,
            allow_writes=allow_writes,
            token_file=token_file,
            cluster=cluster,
        )
        serve(settings)
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
