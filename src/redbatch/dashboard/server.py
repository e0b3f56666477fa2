"""Start the dashboard: check the settings, connect to Redis (or start a private one), bind
the address, say where it is, and serve with uvicorn until SIGTERM or Ctrl-C (exit 0).

The socket is bound here, before uvicorn starts, so the printed URL is final (``--port 0``
picks a free port) and a port in use is one readable line.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from redbatch.config import check_environment
from redbatch.dashboard.security import MIN_TOKEN_CHARS, Guard, new_token
from redbatch.errors import ConfigError
from redbatch.protocol.keys import KeySpace
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import check_reachable, connection_name, redacted

MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 60.0
_GRACE_S = 3  # open page requests get this long to finish on shutdown
EXTRA_MISSING = (
    "redbatch dashboard needs its extra (Starlette and uvicorn): pip install 'redbatch[dashboard]'"
)


@dataclass(frozen=True)
class Settings:
    redis_url: str | None  # None: a private redis-server (--embedded)
    namespace: str
    host: str
    port: int
    interval_s: float
    allow_writes: bool
    token_file: str | None
    cluster: bool | None


def read_token(settings: Settings) -> tuple[str | None, str]:
    """The write token (None: read-only) and where it came from, for the start-up lines."""
    if settings.token_file is not None and not settings.allow_writes:
        raise ConfigError("--token-file is for --allow-writes: a read-only dashboard has no token")
    if not settings.allow_writes:
        return None, "read-only"
    if settings.token_file is None:
        token = new_token()
        return token, f"token {token}"
    try:
        token = Path(settings.token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --token-file {settings.token_file}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"--token-file {settings.token_file}: the token must be at least {MIN_TOKEN_CHARS} "
            "characters, without spaces"
        )
    return token, f"the token in {settings.token_file}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def page_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def check(settings: Settings) -> None:
    check_environment(os.environ)
    if not MIN_INTERVAL_S <= settings.interval_s <= MAX_INTERVAL_S:
        raise ConfigError(
            f"invalid --interval {settings.interval_s:g}: use {MIN_INTERVAL_S:g} to "
            f"{MAX_INTERVAL_S:g} s"
        )


def serve(settings: Settings) -> None:
    check(settings)
    try:
        import uvicorn  # noqa: PLC0415

        from redbatch.dashboard.app import create_app  # noqa: PLC0415 - imports Starlette
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    # Imported only to serve: ~70 ms (rich, the ops layer) that `redbatch dashboard --help`
    # and a refused setting need not pay (the CLI imports this module to read the command).
    from rich.console import Console  # noqa: PLC0415

    from redbatch.dashboard.source import Source  # noqa: PLC0415
    from redbatch.launch import redis_url_or_embedded  # noqa: PLC0415

    token, writes = read_token(settings)
    keyspace = KeySpace(settings.namespace)
    with redis_url_or_embedded(settings.redis_url, Console(stderr=True)) as url:
        name = connection_name("dashboard", f"{socket.gethostname()}-{os.getpid()}")
        client = connect_any(url, cluster=settings.cluster, client_name=name)
        try:
            check_reachable(url, client)
            sock = bind(settings.host, settings.port)
            app = create_app(
                Source(client, keyspace, settings.interval_s),
                Guard(token),
                url=url,
                interval_s=settings.interval_s,
                loopback=is_loopback(settings.host),
            )
            _announce(page_url(sock), url, settings, writes)
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=_GRACE_S,
            )
            _quiet_after_shutdown()
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            client.close()


def _announce(page: str, url: str, settings: Settings, writes: str) -> None:
    mode = f"writes allowed with {writes}" if settings.allow_writes else writes
    click.echo(
        f"redbatch dashboard on {page} (Redis {redacted(url)}, namespace {settings.namespace}), "
        f"{mode}; Ctrl-C stops it"
    )
    if settings.allow_writes:
        click.echo(f"log in to replay or purge at {page}login")
    if not is_loopback(settings.host):
        click.echo(
            f"warning: listening on {settings.host}: whoever reaches this port sees the queues, "
            "request ids and dead-letter payloads (no TLS here: put a proxy with TLS in front)",
            err=True,
        )
    sys.stdout.flush()


def _quiet_after_shutdown() -> None:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again under the
    previous handler: this one lets the process end with 0, as the other commands do."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
