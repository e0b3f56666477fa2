"""``redbatch demo``: the whole system on this machine, measured, then cleaned up."""

from __future__ import annotations

import os
import signal
import sys

import click

from redbatch import demo, demo_stream
from redbatch.cli.common import EXIT_INTERRUPTED, fail
from redbatch.config import ENV_NAMES, WorkerConfig, check_environment
from redbatch.errors import RedbatchError
from redbatch.settings import declared_as


@click.command("demo")
@click.option(
    "--requests", "count", type=int, help="how many, default 5000 (echo) or 2000 (MiniLM)"
)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option(
    "--max-batch-size",
    type=int,
    default=declared_as(WorkerConfig, "max_batch_size").field.default,
    show_default=True,
)
@click.option(
    "--model",
    type=click.Choice(list(demo.MODELS)),
    default="auto",
    show_default=True,
    help="auto = MiniLM when its extra is installed, else echo",
)
@click.option("--in-flight", type=int, default=64, show_default=True, help="requests kept going")
@click.option(
    "--dashboard",
    is_flag=True,
    help="also run `redbatch dashboard` on it, and keep everything up after the run until Ctrl-C",
)
@click.option(
    "--stream",
    is_flag=True,
    help="streaming: a text generator's words appear live (--requests streams, default 8)",
)
def command(
    count: int | None,
    workers: int,
    max_batch_size: int,
    model: str,
    in_flight: int,
    dashboard: bool,
    stream: bool,
) -> None:
    """Run the system on this machine: a private Redis (unless REDBATCH_REDIS_URL is set), a
    scheduler, worker processes (MiniLM or echo) and a producer; prints throughput, latency
    and the status table, and cleans up everything it started."""
    # Ctrl-C and SIGTERM stop everything the demo started, even when this process was
    # started with SIGINT ignored (a background job of a non-interactive shell).
    # SIGTERM becomes SIGINT, which asyncio turns into a clean cancellation of the demo.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        check_environment(os.environ)
        if stream:
            demo_stream.run(
                redis_url=os.environ.get(ENV_NAMES["redis_url"]) or None,
                streams=count if count is not None else 8,
                workers=workers,
            )
            return
        demo.run(
            redis_url=os.environ.get(ENV_NAMES["redis_url"]) or None,
            count=count,
            workers=workers,
            max_batch_size=max_batch_size,
            model=model,
            in_flight=in_flight,
            dashboard=dashboard,
        )
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted: stopped everything the demo started", err=True)
        sys.exit(EXIT_INTERRUPTED)
