"""Redis clients built one way for every part: bytes replies, redis-py's own Retry/backoff.

Reconnects are redis-py's job (``Retry`` with exponential backoff and jitter), not a hand
loop of ours. Errors that reach a user are translated into one readable line.

TLS settings travel in the URL, as redis-py's own query parameters (its ``parse_url`` hands
them to the connection), so they are given once and reach every command, the worker's and
the producer's extra connections, and ``REDBATCH_REDIS_URL`` alike::

    rediss://user:pw@host:6380/0?ssl_ca_certs=ca.crt&ssl_certfile=client.crt&ssl_keyfile=client.key

``check_url`` refuses parameters redis-py would not read and TLS files it cannot load, so a
typo or a missing certificate is a setting error at start-up, not a failure at first use.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError, RedisRefused

DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
# Long-running parts ride out a Redis restart: retry for ever, backing off up to 2 s.
FOREVER = -1


# Certificate files, read by the ssl module when a connection opens.
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
# Query parameters that only a rediss:// connection accepts (the others would pass them to a
# plain socket connection, which fails with a TypeError at the first command).
_TLS_PARAMS = frozenset(
    {
        *TLS_FILES, "ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname", "ssl_password",
        "ssl_min_version", "ssl_ciphers", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
    }
)  # fmt: skip
# Other parameters redis-py reads from a URL (it parses the typed ones itself).
_PLAIN_PARAMS = (
    frozenset(redis.connection.URL_QUERY_ARGUMENT_PARSERS) | {"client_name"}
) - _TLS_PARAMS
_SECRET_PARAMS = frozenset({"ssl_password"})


def redacted(url: str) -> str:
    """The URL with any password (and a TLS key's passphrase) replaced, safe for logs."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.password is None and not _SECRET_PARAMS & set(query):
        return url  # as given: urlunsplit would rewrite unix:///path as unix:/path
    if any(name in _SECRET_PARAMS for name in query):
        masked = {k: ["***"] if k in _SECRET_PARAMS else v for k, v in query.items()}
        parts = parts._replace(query=urlencode(masked, doseq=True, safe="*/"))
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    return urlunsplit(parts)


def check_url(url: str) -> str:
    """``url`` if redis-py can use it: scheme, query parameters and TLS files; else
    ConfigError with one line."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"invalid Redis URL {redacted(url)!r}: it must start with redis://, rediss:// or unix://"
        )
    try:
        options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
    for name in parse_qs(urlsplit(url).query, keep_blank_values=True):
        if name in _TLS_PARAMS and scheme != "rediss":
            raise ConfigError(
                f"invalid Redis URL {redacted(url)!r}: {name} needs TLS, a rediss:// URL"
            )
        if name not in _TLS_PARAMS | _PLAIN_PARAMS:
            raise ConfigError(
                f"invalid Redis URL {redacted(url)!r}: unknown parameter {name!r} "
                f"(TLS files are given as {', '.join(TLS_FILES)})"
            )
    if scheme == "rediss":
        check_tls_files(options)
    return url


def check_tls_files(options: dict[str, Any]) -> None:
    """Load the certificates and key named in ``options`` (redis-py's connection keywords)
    the way a connection would, so an unreadable or wrong file is a ConfigError now."""
    for name in TLS_FILES:
        path = options.get(name)
        if path is None:
            continue
        try:
            with Path(path).open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot read TLS file {name}={path}: {exc.strerror}") from None
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if keyfile is not None and certfile is None:
        raise ConfigError("ssl_keyfile is given without ssl_certfile (the client certificate)")
    context = ssl.create_default_context()
    try:
        if options.get("ssl_ca_certs") is not None:
            context.load_verify_locations(cafile=options["ssl_ca_certs"])
    except ssl.SSLError as exc:
        raise ConfigError(
            f"ssl_ca_certs={options['ssl_ca_certs']} is not a CA certificate "
            f"file (PEM): {exc.reason or exc}"
        ) from None
    try:
        if certfile is not None:
            # A passphrase of "" rather than None: OpenSSL would prompt on the terminal for one.
            context.load_cert_chain(certfile, keyfile, password=options.get("ssl_password") or "")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"ssl_certfile={certfile} / ssl_keyfile={keyfile} is not a certificate with its "
            f"private key (PEM): {exc.reason or exc}"
        ) from None


# redis-py 8 reads with a 5 s timeout by default; parts that block longer pass their own.
DEFAULT_SOCKET_TIMEOUT_S = 5.0


def reconnect_backoff() -> ExponentialWithJitterBackoff:
    """Exponential backoff with jitter from 50 ms up to 2 s: every reconnect here uses it."""
    return ExponentialWithJitterBackoff(base=0.05, cap=2.0)


def backoff_retry(retries: int) -> Retry:
    """redis-py's reconnect policy for sync clients: ``retries`` more attempts (FOREVER:
    no end), exponential backoff with jitter from 50 ms up to 2 s."""
    return Retry(reconnect_backoff(), retries)


def backoff_retry_async(retries: int) -> redis.asyncio.retry.Retry:
    """The same policy for asyncio clients, which need redis.asyncio's Retry: given the
    sync one, an asyncio connection never retries at all (it would get a coroutine back)."""
    return redis.asyncio.retry.Retry(reconnect_backoff(), retries)


def client_options(
    retry: Retry | redis.asyncio.retry.Retry, socket_timeout: float
) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "retry": retry,
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }


def connection_name(role: str, name: str) -> str:
    """The name every connection of one part gives itself (``CLIENT SETNAME``, passed to
    redis-py as ``client_name`` so a reconnect names itself again): ``redbatch:<role>:<name>``,
    e.g. ``redbatch:worker:gpu1-4242-9f3c2a``, so ``CLIENT LIST`` tells who is who. Redis
    refuses a name with spaces or characters outside printable ASCII: those become ``_``."""
    return "".join(c if "!" <= c <= "~" else "_" for c in f"redbatch:{role}:{name}")


# A client's pool blocks (up to this long) for a free connection when all are in use: with
# redis-py's default pool the 101st concurrent command fails with "Too many connections",
# e.g. 200 asyncio tasks submitting at once.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 30.0


def connect(
    url: str,
    *,
    retries: int = 3,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    client_name: str | None = None,
) -> redis.Redis:
    """A sync client on ``url`` (bytes replies: payloads are binary); ``client_name``: each
    of its connections names itself so (redis-py sends ``CLIENT SETNAME`` on connect)."""
    pool = redis.BlockingConnectionPool.from_url(
        check_url(url),
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        client_name=client_name,
        **client_options(backoff_retry(retries), socket_timeout),
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: close() closes it


# A sync client: one node, or a Redis Cluster (same command API; pipelines and scripts
# route by slot there, so every multi-key call stays within one queue's {Q} slot).
Client = redis.Redis | RedisCluster


# An asyncio client: one node, or a Redis Cluster.
AsyncClient = redis.asyncio.Redis | AsyncRedisCluster


def connect_async(
    url: str,
    *,
    retries: int = 3,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    client_name: str | None = None,
) -> redis.asyncio.Redis:
    """An asyncio client on ``url`` (bytes replies), as ``connect``."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        check_url(url),
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        client_name=client_name,
        **client_options(backoff_retry_async(retries), socket_timeout),
    )
    return redis.asyncio.Redis.from_pool(pool)


def describe_error(url: str, exc: BaseException) -> str:
    """One line saying why Redis at ``url`` could not be used."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot use Redis at {redacted(url)}: {reason}"


# How Redis words an ACL refusal: NOPERM at top level, this inside a Lua script.
_ACL_REFUSALS = ("NOPERM", "no permissions", "can't run this command")


def acl_refusal(exc: BaseException) -> str | None:
    """One line saying that Redis refused the user a command or key, or None when ``exc``
    is not such a refusal."""
    text = str(exc).strip()
    if not isinstance(exc, redis.ResponseError) or not any(w in text for w in _ACL_REFUSALS):
        return None
    # A script's refusal goes on with "script: <sha>, on @user_script:<line>": no help to a user.
    reason = text.splitlines()[0].split(" script: ", 1)[0]
    return (
        f"Redis refused a command to this user (ACL): {reason}; grant the commands of this "
        f"part (docs/security.md)"
    )


# Error codes of a server that answers but refuses for now: reconnecting does not help, a
# retry after a pause does (redis-py keeps the code as ``status_code``).
REFUSALS = frozenset(
    {"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}
)


def refusal_code(exc: BaseException) -> str | None:
    """The server's code when ``exc`` is a transient refusal (``REFUSALS``), else None. A
    refusal raised inside a script keeps its code as the first word of its text."""
    code = getattr(exc, "status_code", None)
    if code is None and isinstance(exc, redis.ResponseError):
        code = str(exc).split(" ", 1)[0]
    return code if code in REFUSALS else None


def redis_failure(what: str, exc: BaseException) -> RedbatchError:
    """The error a user gets for a failed Redis command: RedisRefused (with the server's
    reason) when Redis refused it for now, ConnectionFailed otherwise."""
    code = refusal_code(exc)
    if code is not None:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else code
        return RedisRefused(what, code, message.split(" script: ", 1)[0])
    return ConnectionFailed(f"{what}: {exc}")


def ping(client: Client, url: str) -> None:
    """Fail fast with ConnectionFailed (one line) when Redis is unreachable or refuses us."""
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None
    except redis.ResponseError as exc:
        raise ConnectionFailed(describe_error(url, exc)) from None


async def ping_async(client: AsyncClient, url: str) -> None:
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


def address(client: Client | AsyncClient) -> str:
    """Where ``client`` connects, for error lines (never includes a password)."""
    if isinstance(client, AsyncRedisCluster):
        seed = next(iter(client.nodes_manager.startup_nodes.values()), None)
        return f"cluster via {seed.name}" if seed is not None else "cluster"
    if isinstance(client, RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        return f"cluster via {node.host}:{node.port}" if node is not None else "cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def check_reachable(
    url: str, client: Client | None = None, *, client_name: str | None = None
) -> None:
    """Fail fast at start-up (ConnectionFailed, one line) when Redis cannot be used.

    Long-running parts retry commands for a long while once serving; at start-up an
    unreachable Redis must be reported at once, so the check uses a probe with one retry
    (or the caller's own client, whose retry policy is its business), named ``client_name``."""
    if client is not None:
        ping(client, url)
        return
    probe = connect(url, retries=1, client_name=client_name)
    try:
        ping(probe, url)
    finally:
        probe.close()
