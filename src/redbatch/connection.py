"""Redis clients built one way for every part: bytes replies, redis-py's own Retry/backoff.

Reconnects are redis-py's job (``Retry`` with exponential backoff and jitter), not a hand
loop of ours. Errors that reach a user are translated into one readable line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from redbatch.errors import ConfigError, ConnectionFailed

DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
# Long-running parts ride out a Redis restart: retry for ever, backing off up to 2 s.
FOREVER = -1


def redacted(url: str) -> str:
    """The URL with any password replaced, safe for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: it must start with redis://, rediss:// or unix://"
        )
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
    return url


# redis-py 8 reads with a 5 s timeout by default; parts that block longer pass their own.
DEFAULT_SOCKET_TIMEOUT_S = 5.0


def backoff_retry(retries: int) -> Retry:
    """redis-py's reconnect policy for sync clients: ``retries`` more attempts (FOREVER:
    no end), exponential backoff with jitter from 50 ms up to 2 s."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries)


def backoff_retry_async(retries: int) -> redis.asyncio.retry.Retry:
    """The same policy for asyncio clients, which need redis.asyncio's Retry: given the
    sync one, an asyncio connection never retries at all (it would get a coroutine back)."""
    return redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries)


def _options(retry: Retry | redis.asyncio.retry.Retry, socket_timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "retry": retry,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }


# A client's pool blocks (up to this long) for a free connection when all are in use: with
# redis-py's default pool the 101st concurrent command fails with "Too many connections",
# e.g. 200 asyncio tasks submitting at once.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 30.0


def connect(
    url: str, *, retries: int = 3, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.Redis:
    """A sync client on ``url`` (bytes replies: payloads are binary)."""
    pool = redis.BlockingConnectionPool.from_url(
        check_url(url),
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        **_options(backoff_retry(retries), socket_timeout),
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: close() closes it


def connect_async(
    url: str, *, retries: int = 3, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S
) -> redis.asyncio.Redis:
    """An asyncio client on ``url`` (bytes replies)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        check_url(url),
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        **_options(backoff_retry_async(retries), socket_timeout),
    )
    return redis.asyncio.Redis.from_pool(pool)


def describe_error(url: str, exc: BaseException) -> str:
    """One line saying why Redis at ``url`` could not be used."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot use Redis at {redacted(url)}: {reason}"


def ping(client: redis.Redis, url: str) -> None:
    """Fail fast with ConnectionFailed (one line) when Redis is unreachable or refuses us."""
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None
    except redis.ResponseError as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None


async def ping_async(client: redis.asyncio.Redis, url: str) -> None:
    try:
        await client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None


def clone_kwargs(
    client: redis.Redis | redis.asyncio.Redis, *, socket_timeout: float | None = None
) -> dict[str, Any]:
    """Connection settings of ``client``, to open a dedicated connection to the same server.

    ``socket_timeout`` (s) replaces the client's read timeout: a connection made for blocking
    reads needs one longer than its blocks (redis-py 8 defaults to 5 s, which would cut off
    a 5 s blocking pop with a TimeoutError instead of its empty answer).
    """
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs.pop("retry", None)
    if socket_timeout is not None:
        kwargs["socket_timeout"] = socket_timeout
        kwargs.pop("orig_socket_timeout", None)  # redis-py 8 restores this one after relaxing
    return kwargs


def address(client: redis.Redis | redis.asyncio.Redis) -> str:
    """Where ``client`` connects, for error lines (never includes a password)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def check_reachable(url: str, client: redis.Redis | None = None) -> None:
    """Fail fast at start-up (ConnectionFailed, one line) when Redis cannot be used.

    Long-running parts retry commands for a long while once serving; at start-up an
    unreachable Redis must be reported at once, so the check uses a probe with one retry
    (or the caller's own client, whose retry policy is its business)."""
    if client is not None:
        ping(client, url)
        return
    probe = connect(url, retries=1)
    try:
        ping(probe, url)
    finally:
        probe.close()
