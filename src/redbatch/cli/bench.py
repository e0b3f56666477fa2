"""``redbatch bench`` (the load generator is ``redbatch.bench``): options in, one readable
line and exit 2/3 on bad input or an unreachable Redis, 130 on Ctrl-C/SIGTERM (after
stopping everything it started)."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from redbatch.bench.drive import on_stop_signals
from redbatch.bench.run import run
from redbatch.bench.settings import ARRIVALS, DEFAULT_CONCURRENCY, DEFAULT_HANDLER, Settings
from redbatch.cli.common import EXIT_INTERRUPTED, fail, node_options
from redbatch.config import check_environment, parse_handler_options
from redbatch.errors import ConfigError, RedbatchError


@click.command("bench")
@node_options  # not --cluster: bench and the workers it starts talk to one node
@click.option("--embedded", is_flag=True, help="start a private redis-server (not --redis-url)")
@click.option(
    "--queue", help="queue to load; default a new bench-XXXXXX, removed afterwards (needed "
    "with --workers 0)",
)  # fmt: skip
@click.option(
    "--workers", type=int, default=2, show_default=True,
    help="worker processes bench starts and stops; 0 = use the workers serving --queue",
)  # fmt: skip
@click.option("--handler", default=DEFAULT_HANDLER, show_default=True, metavar="MODULE:FUNCTION")
@click.option(
    "--handler-option", "handler_options", multiple=True, metavar="NAME=VALUE",
    help="keyword argument for the handler, repeatable",
)  # fmt: skip
@click.option("--max-batch-size", type=int, help="of bench's workers (default: the worker's)")
@click.option("--max-wait-ms", type=int, help="batch window of bench's workers")
@click.option("--requests", type=int, default=1000, show_default=True, help="measured requests")
@click.option(
    "--concurrency", type=int,
    help=f"closed loop: requests in flight, default {DEFAULT_CONCURRENCY}",
)  # fmt: skip
@click.option(
    "--rate", type=float,
    help="open loop: requests/s arriving on a schedule; latency from the scheduled time",
)  # fmt: skip
@click.option(
    "--arrivals", type=click.Choice(ARRIVALS), default="poisson", show_default=True,
    help="open loop: exponential gaps (seeded) or even ones",
)  # fmt: skip
@click.option(
    "--payload-bytes", type=int, default=64, show_default=True, help="msgpack payload size"
)
@click.option(
    "--timeout", "timeout_s", type=float, default=60.0, show_default=True,
    help="seconds a request may take; no outcome 5 s after it counts as lost",
)  # fmt: skip
@click.option(
    "--sample", type=int, default=1000, show_default=True,
    help="requests whose result hash is read for the batch sizes (every k-th)",
)  # fmt: skip
@click.option(
    "--no-verify", is_flag=True,
    help="do not compare results with payloads (done for the echo and sleep handlers)",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (schema 1)")
@click.pass_context
def command(ctx: click.Context, /, **options: object) -> None:
    """Load a queue and measure it: throughput, latency p50/p90/p99/max (submit to result),
    outcomes, batch sizes, and the CPU Redis and the workers used per request.

    \b
    Closed loop (--concurrency C): C requests in flight, each sent when one ends.
    Open loop (--rate R): arrivals at R/s whatever the pace; latency counts from each
    request's scheduled send, so a backlog shows (no coordinated omission).

    Batch sizes: of a sample of ok requests (every k-th, up to --sample), how many ran
    in a batch of each size, from their result hashes' "batch" field (request-weighted,
    exact sizes) — not the 10-second statistics slots, which hold only totals.
    Redis CPU: INFO cpu (used_cpu_sys + used_cpu_user) before and after the run: on a
    shared Redis it includes everyone's work. Worker CPU: /proc/<pid>/stat of the
    workers bench started. Both exclude start-up and a 128-request warm-up.

    The fields of --json are listed in redbatch/bench/report.py.
    """
    on_stop_signals()
    try:
        settings = _settings(ctx, dict(options))
        report = run(settings, Console(stderr=True))
        if settings.as_json:
            click.echo(json.dumps(report.to_json(), indent=2))
        else:
            Console().print(report.render())
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted: stopped everything bench started", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _settings(ctx: click.Context, options: dict[str, object]) -> Settings:
    check_environment(os.environ)
    given = ctx.get_parameter_source
    if options.pop("embedded"):
        if given("redis_url") == click.core.ParameterSource.COMMANDLINE:
            raise ConfigError("give --embedded or --redis-url, not both")
        options["redis_url"] = None
    if options["concurrency"] is not None and options["rate"] is not None:
        raise ConfigError("give --concurrency (closed loop) or --rate (open loop), not both")
    if options["concurrency"] is None:
        options["concurrency"] = DEFAULT_CONCURRENCY
    texts = options.pop("handler_options")
    assert isinstance(texts, tuple)
    options["handler_options"] = tuple(o for text in texts for o in parse_handler_options(text))
    options["verify"] = not options.pop("no_verify")
    return Settings(**options)  # type: ignore[arg-type]
