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
from typing import Any, NoReturn, TypeVar

import click
import redis

from redbatch import demo as demo_module
from redbatch.config import ENV_NAMES, SchedulerConfig, WorkerConfig, check_environment
from redbatch.connection import DEFAULT_URL, acl_refusal
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.logconfig import setup as setup_logging
from redbatch.settings import Declared, declared, declared_as, shown_default

_Command = TypeVar("_Command", bound=Callable[..., Any])

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


def setting_options(cls: type[Any]) -> Callable[[_Command], _Command]:
    """One option per setting of config class ``cls`` (an argument for ``QUEUE...``), each
    read by its field's parser; a value not given is None, so the environment, then the
    field's default, applies (``from_env``)."""

    def decorate(command: _Command) -> _Command:
        for one in reversed(declared(cls)):
            command = _option(one)(command)
        return command

    return decorate


def _option(one: Declared) -> Callable[[_Command], _Command]:
    if one.setting.flag == "QUEUE...":
        return click.argument(one.name, nargs=-1)
    flag = one.flag
    shown = shown_default(one)
    repeatable = "; repeatable" if one.many else ""
    default = f"; default: {shown}" if shown is not None else ""
    help_text = f"{one.setting.help}{repeatable} [env var: {one.setting.env}{default}]"
    if "/" in flag:  # --cluster/--no-cluster: a yes/no whose absence means "not given"
        return click.option(flag, one.name, default=None, help=help_text)

    def read(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not value:
            return None
        return one.parse(" ".join(value) if one.many else value)

    return click.option(
        flag,
        one.name,
        multiple=one.many,
        metavar=one.setting.metavar or _metavar(one),
        callback=read,
        help=help_text,
    )


def _metavar(one: Declared) -> str:
    if one.setting.choices:
        return "[" + "|".join(one.setting.choices) + "]"
    return {int: "INTEGER", float: "FLOAT"}.get(one.kind, "TEXT")


class _Main(click.Group):
    """Every command: a bad option, or a Redis user lacking a permission (ACL), gets one
    line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedbatchError as exc:  # a setting's option could not be read
            fail(exc)
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


_CHECK_WORKER = (
    "exit 0 if a worker of this host serving QUEUE... has a live heartbeat, else 1 "
    "(an exec probe, like arq --check)"
)
_CHECK_SCHEDULER = "exit 0 if a scheduler of this host has reached Redis lately, else 1"


@main.command()
@setting_options(WorkerConfig)
@click.option("--check", is_flag=True, help=_CHECK_WORKER)
def worker(check: bool, **options: Any) -> None:
    """Serve QUEUES with a batch handler until SIGTERM or Ctrl-C (then drain and exit 0)."""
    from redbatch.worker import Worker  # noqa: PLC0415 - keep `redbatch --help` light

    if check:
        sys.exit(_check(WorkerConfig, options))
    # Signals first: importing a handler may load a model for a minute, and a SIGTERM then
    # must still mean "stop cleanly", not a kill by the default handler.
    stop = threading.Event()
    _on_stop_signals(stop.set)
    try:
        config = WorkerConfig.from_env(**options)
        setup_logging(config.log_level, config.log_format)
        if config.processes > 1 or config.gpus:
            from redbatch.worker.pool_main import run_pool  # noqa: PLC0415

            argv = sys.argv[sys.argv.index("worker") + 1 :]
            sys.exit(run_pool(config, argv, config.processes, config.gpus, stop))
        Worker(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)


def _check(cls: type[WorkerConfig] | type[SchedulerConfig], options: dict[str, Any]) -> int:
    """``--check``: 0 when this host's worker/scheduler has a live heartbeat, else 1 and the
    reason on one line (2 or 3 for a bad setting or an unreachable Redis, as ever)."""
    from redbatch.ops.check import run_check  # noqa: PLC0415

    try:
        if cls is WorkerConfig and not (
            options.get("handler") or os.environ.get(ENV_NAMES["handler"])
        ):
            options["handler"] = ("redbatch.handlers:echo",)  # --check serves nothing
        return run_check(cls.from_env(**options))
    except RedbatchError as exc:
        fail(exc)


@main.command()
@setting_options(SchedulerConfig)
@click.option("--check", is_flag=True, help=_CHECK_SCHEDULER)
def scheduler(check: bool, **options: Any) -> None:
    """Re-queue work of dead or hung workers, dead-letter what ran out of attempts, move due
    retries and remove stale consumers, on every queue, until SIGTERM or Ctrl-C (exit 0).
    Several schedulers may run at once."""
    from redbatch.scheduler import Scheduler  # noqa: PLC0415 - keep `redbatch --help` light

    if check:
        sys.exit(_check(SchedulerConfig, options))
    stop = threading.Event()
    _on_stop_signals(stop.set)
    try:
        config = SchedulerConfig.from_env(**options)
        setup_logging(config.log_level, config.log_format)
        Scheduler(config, stop=stop).run()
    except RedbatchError as exc:
        fail(exc)


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
@click.option(
    "--max-batch-size",
    type=int,
    default=declared_as(WorkerConfig, "max_batch_size").field.default,
    show_default=True,
)
@click.option(
    "--model",
    type=click.Choice(list(demo_module.MODELS)),
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
def demo(
    count: int | None,
    workers: int,
    max_batch_size: int,
    model: str,
    in_flight: int,
    dashboard: bool,
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
        demo_module.run(
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
        sys.exit(130)


def _add_operator_commands() -> None:
    from redbatch import bench  # noqa: PLC0415
    from redbatch.dashboard import cli as dashboard  # noqa: PLC0415
    from redbatch.ops import dlq, inspect, queue_cli, status  # noqa: PLC0415

    for module in (status, inspect, dlq, queue_cli, bench, dashboard):
        main.add_command(module.command)


_add_operator_commands()
