"""Command-line pieces shared by ``redbatch inspect`` and ``redbatch dlq``: the connection
options, opening a checked client, and the one-line error path.

Imported when ``redbatch`` starts (the commands are registered at import): only click and
modules ``redbatch.cli`` loads anyway are imported at module level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from redbatch.config import ENV_NAMES
from redbatch.connection import DEFAULT_URL
from redbatch.errors import ConnectionFailed, RedbatchError

if TYPE_CHECKING:
    import redis

    from redbatch.protocol.keys import KeySpace

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    """``--redis-url``, ``--namespace`` (with their REDBATCH_* variables) and ``--json``."""
    func = click.option(
        "--json", "as_json", is_flag=True, help="print one JSON document instead of text"
    )(func)
    func = click.option(
        "--namespace",
        envvar=ENV_NAMES["namespace"],
        default="rb",
        show_default=True,
        show_envvar=True,
        help="key prefix",
    )(func)
    func = click.option(
        "--redis-url",
        envvar=ENV_NAMES["redis_url"],
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
    )(func)
    return func


def fail(exc: RedbatchError) -> NoReturn:
    """One line on stderr and the exit code of ``redbatch.cli.fail`` (2 config, 3 Redis)."""
    from redbatch.cli import fail as cli_fail  # noqa: PLC0415 - cli imports this module

    cli_fail(exc)


@contextmanager
def opened(redis_url: str, namespace: str) -> Iterator[tuple[redis.Redis, KeySpace]]:
    """A client that answered PING, and the namespace's keys; Redis errors meanwhile become
    one line and exit 3 (connection) or 1 (anything else Redis refuses)."""
    import redis  # noqa: PLC0415 - keep `redbatch --help` light

    from redbatch.config import check_environment  # noqa: PLC0415
    from redbatch.connection import connect, describe_error, ping, redacted  # noqa: PLC0415
    from redbatch.protocol.keys import KeySpace  # noqa: PLC0415

    try:
        check_environment(os.environ)
        keyspace = KeySpace(namespace)
        client = connect(redis_url, retries=1)
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


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
