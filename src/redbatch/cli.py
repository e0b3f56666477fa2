"""The ``redbatch`` command. User errors end in one readable line and a distinct exit code:
2 for a bad setting or argument, 3 when Redis cannot be reached, 1 for anything else.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

import click
import redis

from redbatch import demo as demo_module
from redbatch.config import (
    ENV_NAMES,
    SchedulerConfig,
    WorkerConfig,
    check_environment,
    parse_handler_options,
    parse_sizes,
)
from redbatch.connection import DEFAULT_URL, acl_refusal
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.logconfig import setup as setup_logging

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def fail(exc: RedbatchError) -> NoReturn:
    click.echo(f"redbatch: error: {exc}", err=True)
    if isinstance(exc, ConfigError):
        sys.exit(EXIT_CONFIG)
    if isinstance(exc, ConnectionFailed):
        sys.exit(EXIT_UNREACHABLE)
    sys.exit(1)


_CLUSTER = "Redis Cluster client or not; default: ask the server (HELLO mode)"


def _env(setting: str) -> str:
    return f"[env: {ENV_NAMES[setting]}]"


class _Main(click.Group):
    """Every command: a Redis user lacking a permission (ACL) gets one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.ResponseError as exc:
            reason = acl_refusal(exc)
            if reason is None:
                raise
            fail(ConnectionFailed(reason))


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="redbatch")
def main() -> None:
    """redbatch: ML inference requests over Redis Streams, run in micro-batches.

    Settings come from options or REDBATCH_* environment variables, e.g. REDBATCH_REDIS_URL
    (default redis://localhost:6379/0); an option wins over its variable. An unknown
    REDBATCH_* variable is an error.
    """


@main.command()
@click.argument("queues", nargs=-1)
@click.option(
    "--handler",
    multiple=True,
    metavar="[QUEUE=]MODULE:FUNCTION",
    help=f"batch function for every queue, or QUEUE=... for one; repeatable {_env('handler')}",
)
@click.option(
    "--handler-option",
    "handler_options",
    multiple=True,
    metavar="[QUEUE:]NAME=VALUE",
    help=f"keyword argument for the handlers (or one queue's), repeatable "
    f"{_env('handler_options')}",
)
@click.option("--redis-url", help=f"default {DEFAULT_URL} {_env('redis_url')}")
@click.option("--namespace", help=f"key prefix, default rb {_env('namespace')}")
@click.option("--name", help=f"consumer name, default host-pid-random {_env('name')}")
@click.option(
    "--max-batch-size", type=int, help=f"items per batch, default 32 {_env('max_batch_size')}"
)
@click.option("--max-wait-ms", type=int, help=f"batch window, default 2 {_env('max_wait_ms')}")
@click.option(
    "--max-batch-cost",
    type=int,
    help=f"sum of request costs per batch, 0 = none {_env('max_batch_cost')}",
)
@click.option(
    "--preferred-batch-sizes",
    metavar="N,N,...",
    help=f"run at these sizes before the window closes {_env('preferred_batch_sizes')}",
)
@click.option(
    "--priority-aging-ms",
    type=int,
    help=f"a waiting request gains a priority level per this long, default 1000, 0 = strict "
    f"{_env('priority_aging_ms')}",
)
@click.option(
    "--target-latency-ms",
    type=int,
    help=f"tune the window and batch size to keep queue wait + service under this, 0 = off "
    f"{_env('target_latency_ms')}",
)
@click.option("--block-ms", type=int, help=f"idle read block, default 1000 {_env('block_ms')}")
@click.option(
    "--result-ttl", "result_ttl_s", type=int, help=f"seconds, default 3600 {_env('result_ttl_s')}"
)
@click.option(
    "--batch-timeout",
    "batch_timeout_s",
    type=int,
    help=f"seconds a batch may run before the process exits, default 300 {_env('batch_timeout_s')}",
)
@click.option(
    "--heartbeat-ttl",
    "heartbeat_ttl_s",
    type=int,
    help=f"seconds, default 5 {_env('heartbeat_ttl_s')}",
)
@click.option(
    "--drain-timeout",
    "drain_timeout_s",
    type=int,
    help=f"seconds to finish the running batch on stop, default 30 {_env('drain_timeout_s')}",
)
@click.option(
    "--max-attempts", type=int, help=f"deliveries before dead, default 3 {_env('max_attempts')}"
)
@click.option(
    "--retry-on",
    multiple=True,
    metavar="MODULE.EXCEPTION",
    help=f"exception type that re-queues with backoff, repeatable {_env('retry_on')}",
)
@click.option(
    "--retry-delay",
    "retry_delay_s",
    type=float,
    help=f"first retry delay, s {_env('retry_delay_s')}",
)
@click.option("--log-level", help=f"DEBUG, INFO, WARNING, ERROR {_env('log_level')}")
@click.option(
    "--log-format", help=f"text (default) or json, one object per line {_env('log_format')}"
)
@click.option(
    "--metrics-port",
    type=int,
    help=f"serve Prometheus metrics on this port, 0 = off (default) {_env('metrics_port')}",
)
@click.option("--cluster/--no-cluster", default=None, help=f"{_CLUSTER} {_env('cluster')}")
def worker(queues: tuple[str, ...], handler_options: tuple[str, ...], **options: Any) -> None:
    """Serve QUEUES with a batch handler until SIGTERM or Ctrl-C (then drain and exit 0)."""
    from redbatch.worker import Worker  # noqa: PLC0415 - keep `redbatch --help` light

    # Signals first: importing a handler may load a model for a minute, and a SIGTERM then
    # must still mean "stop cleanly", not a kill by the default handler.
    stop = threading.Event()
    _on_stop_signals(stop.set)
    try:
        parsed = tuple(o for text in handler_options for o in parse_handler_options(text))
        sizes = options.pop("preferred_batch_sizes", None)
        if sizes is not None:
            options["preferred_batch_sizes"] = parse_sizes(sizes)
        config = WorkerConfig.from_env(queues=queues, handler_options=parsed, **_upper(options))
        setup_logging(config.log_level, config.log_format)
        Worker(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)


@main.command()
@click.option("--redis-url", help=f"default {DEFAULT_URL} {_env('redis_url')}")
@click.option("--namespace", help=f"key prefix, default rb {_env('namespace')}")
@click.option(
    "--interval",
    "interval_s",
    type=float,
    help=f"seconds between passes, default 1 {_env('interval_s')}",
)
@click.option(
    "--hung-margin",
    "hung_margin_s",
    type=int,
    help=f"seconds past a worker's batch_timeout before its entries are re-queued, "
    f"default 30 {_env('hung_margin_s')}",
)
@click.option(
    "--max-attempts",
    type=int,
    help=f"deliveries before dead-lettering, default 3 {_env('max_attempts')}",
)
@click.option(
    "--result-ttl", "result_ttl_s", type=int, help=f"seconds, default 3600 {_env('result_ttl_s')}"
)
@click.option("--log-level", help=f"DEBUG, INFO, WARNING, ERROR {_env('log_level')}")
@click.option(
    "--log-format", help=f"text (default) or json, one object per line {_env('log_format')}"
)
@click.option(
    "--metrics-port",
    type=int,
    help=f"serve Prometheus metrics on this port, 0 = off (default) {_env('metrics_port')}",
)
@click.option("--cluster/--no-cluster", default=None, help=f"{_CLUSTER} {_env('cluster')}")
def scheduler(**options: Any) -> None:
    """Re-queue work of dead or hung workers, dead-letter what ran out of attempts, move due
    retries and remove stale consumers, on every queue, until SIGTERM or Ctrl-C (exit 0).
    Several schedulers may run at once."""
    from redbatch.scheduler import Scheduler  # noqa: PLC0415 - keep `redbatch --help` light

    stop = threading.Event()
    _on_stop_signals(stop.set)
    try:
        config = SchedulerConfig.from_env(**_upper(options))
        setup_logging(config.log_level, config.log_format)
        Scheduler(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)


def _upper(options: dict[str, Any]) -> dict[str, Any]:
    level = options.get("log_level")
    if level:
        options["log_level"] = level.upper()
    return options


def _on_stop_signals(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: drain and exit 0. A second one: exit at once (the scheduler
    re-queues whatever this process still held)."""
    seen: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if seen:
            sys.stderr.write("redbatch: second signal, exiting at once\n")
            os._exit(EXIT_INTERRUPTED)
        seen.append(signum)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


@main.command()
@click.argument("queue")
@click.argument("payload")
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
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds")
@click.option("--id", "request_id", help="request id (default: a random one)")
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="the lane of the queue to send it to",
)
def submit(
    queue: str,
    payload: str,
    redis_url: str,
    namespace: str,
    timeout: float,
    request_id: str | None,
    priority: str,
) -> None:
    """Send one JSON PAYLOAD to QUEUE, wait for its result and print it as JSON."""
    from redbatch.producer import Producer  # noqa: PLC0415

    try:
        check_environment(os.environ)
        try:
            value = json.loads(payload)
        except ValueError as exc:
            raise ConfigError(f"PAYLOAD is not valid JSON: {exc}") from None
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            producer.ping()
            handle = producer.submit(
                queue, value, id=request_id, timeout=timeout, priority=priority
            )
            result = handle.result(timeout)
        click.echo(json.dumps(result, default=_jsonable))
    except RedbatchError as exc:
        fail(exc)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


@main.command()
@click.option(
    "--requests", "count", type=int, help="how many, default 5000 (echo) or 2000 (MiniLM)"
)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--max-batch-size", type=int, default=32, show_default=True)
@click.option(
    "--model",
    type=click.Choice(list(demo_module.MODELS)),
    default="auto",
    show_default=True,
    help="auto = MiniLM when its extra is installed, else echo",
)
@click.option("--in-flight", type=int, default=64, show_default=True, help="requests kept going")
def demo(count: int | None, workers: int, max_batch_size: int, model: str, in_flight: int) -> None:
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
        demo_module.run(
            redis_url=os.environ.get(ENV_NAMES["redis_url"]) or None,
            count=count,
            workers=workers,
            max_batch_size=max_batch_size,
            model=model,
            in_flight=in_flight,
        )
    except RedbatchError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted: stopped everything the demo started", err=True)
        sys.exit(130)


def _add_operator_commands() -> None:
    from redbatch import bench  # noqa: PLC0415
    from redbatch.ops import dlq, inspect, queue_cli, status  # noqa: PLC0415

    for module in (status, inspect, dlq, queue_cli, bench):
        main.add_command(module.command)


_add_operator_commands()
