"""What every ``redbatch`` command shares: the exit codes and the one-line failure, the
options of a config class's settings, the connection options (``--redis-url``,
``--namespace``, ``--cluster``, declared once as settings), JSON output, a checked client,
and the stop signals.

User errors end in one readable line and a distinct exit code: 2 for a bad setting or
argument, 3 when Redis cannot be reached, 1 for anything else.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
import redis

from redbatch import stop_signals
from redbatch.config import SchedulerConfig, check_environment
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.protocol.keys import KeySpace
from redbatch.settings import Declared, declared, shown_default
from redbatch.transport.connection import connect, connection_name, describe_error, ping, redacted

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

Command = TypeVar("Command", bound=Callable[..., Any])

# The settings that say which Redis and keys a command works on, for every command.
CONNECTION = ("redis_url", "namespace", "cluster")


def fail(exc: RedbatchError) -> NoReturn:
    click.echo(f"redbatch: error: {exc}", err=True)
    if isinstance(exc, ConfigError):
        sys.exit(EXIT_CONFIG)
    if isinstance(exc, ConnectionFailed):
        sys.exit(EXIT_UNREACHABLE)
    sys.exit(1)


def setting_options(
    cls: type[Any], names: Sequence[str] | None = None, *, resolve: bool = False
) -> Callable[[Command], Command]:
    """One option per setting of config class ``cls`` (or the ``names`` among them; an
    argument for ``QUEUE...``), each read by its field's parser. A value not given is None,
    so ``from_env`` applies the variable, then the default; with ``resolve`` the command
    gets that value itself (commands that build no config)."""
    chosen = [one for one in declared(cls) if names is None or one.name in names]

    def decorate(command: Command) -> Command:
        for one in reversed(chosen):
            command = _option(one, resolve)(command)
        return command

    return decorate


def connection_options(command: Command) -> Command:
    """``--redis-url``, ``--namespace`` and ``--cluster/--no-cluster``, with their variables."""
    return setting_options(SchedulerConfig, CONNECTION, resolve=True)(command)


def node_options(command: Command) -> Command:
    """``--redis-url`` and ``--namespace``: for commands that talk to one Redis node."""
    return setting_options(SchedulerConfig, CONNECTION[:2], resolve=True)(command)


def json_option(command: Command) -> Command:
    """``--json`` (parameter ``as_json``): one JSON document instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="print one JSON document instead of text"
    )(command)


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@contextmanager
def opened(redis_url: str, namespace: str, command: str) -> Iterator[tuple[redis.Redis, KeySpace]]:
    """A client of one node that answered PING (named ``redbatch:ops:<command>``), and the
    namespace's keys; Redis errors meanwhile become one line and exit 3 (connection) or 1
    (anything else Redis refuses)."""
    try:
        check_environment(os.environ)
        keyspace = KeySpace(namespace)
        client = connect(redis_url, retries=1, client_name=connection_name("ops", command))
    except RedbatchError as exc:
        fail(exc)
    try:
        ping(client, redis_url)
        yield client, keyspace
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        fail(ConnectionFailed(describe_error(redis_url, exc)))
    except redis.ResponseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(RedbatchError(f"Redis at {redacted(redis_url)} refused a command: {reason}"))
    except RedbatchError as exc:
        fail(exc)
    finally:
        client.close()


def on_stop_signals(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: ``stop`` (drain and exit 0). A second one: exit at once (the
    scheduler re-queues whatever this process still held)."""

    def quit_now() -> NoReturn:
        sys.stderr.write("redbatch: second signal, exiting at once\n")
        os._exit(EXIT_INTERRUPTED)

    stop_signals.on_stop_signals(stop, quit_now)


def _option(one: Declared, resolve: bool) -> Callable[[Command], Command]:
    if one.setting.flag == "QUEUE...":
        return click.argument(one.name, nargs=-1)
    shown = shown_default(one)
    repeatable = "; repeatable" if one.many else ""
    default = f"; default: {shown}" if shown is not None else ""
    help_text = f"{one.setting.help}{repeatable} [env var: {one.setting.env}{default}]"

    def read(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if isinstance(value, bool):  # --cluster / --no-cluster
            return value
        if value:
            return one.parse(" ".join(value) if one.many else value)
        return _from_environment(one) if resolve else None

    if "/" in one.flag:  # --cluster/--no-cluster: a yes/no whose absence means "not given"
        return click.option(one.flag, one.name, default=None, callback=read, help=help_text)
    return click.option(
        one.flag,
        one.name,
        multiple=one.many,
        metavar=one.setting.metavar or _metavar(one),
        callback=read,
        help=help_text,
    )


def _from_environment(one: Declared) -> Any:
    """The setting's variable, read as ``from_env`` reads it, else its default."""
    raw = os.environ.get(one.setting.env)
    if raw:
        return one.parse(raw)
    return one.field.default


def _metavar(one: Declared) -> str:
    if one.setting.choices:
        return "[" + "|".join(one.setting.choices) + "]"
    return {int: "INTEGER", float: "FLOAT"}.get(one.kind, "TEXT")
