"""Commands sent now and answered later, on a connection of their own.

The worker sends a batch's ``finish_batch`` call and goes on with the next batch while Redis
runs it: the reply is read a batch later, by when it has long arrived. redis-py's client
API waits for every reply, so this uses its connection-level API (``send_packed_command``
and ``read_response``) with hiredis packing the command, on one connection taken from the
client's pool for this purpose alone. Replies are parsed by redis-py's own parser (hiredis);
error replies raise as they do through the client (``NoScriptError`` and so on).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import NoScriptError

from redbatch.transport.connection import Client, reconnect_backoff
from redbatch.transport.packed import AsyncPackedScript
from redbatch.transport.topology import topology_of


class Deferred:
    """Sends commands at once and reads their replies later, in the order they were sent.

    After a lost connection (ConnectionError or TimeoutError from ``send`` or ``read``) every
    reply still unread is gone: the caller must treat those commands as not known to have
    run. The next ``send`` connects again."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Connection | None = None
        self.unread = 0

    def send(self, *args: bytes | str | int) -> None:
        # hiredis's stub types a 1-tuple; it packs any number of arguments.
        packed = hiredis.pack_command(args)  # type: ignore[arg-type]
        conn = self._connection()
        try:
            # No health check: its PING would read one of our replies as its own.
            conn.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError):
            self._lost()
            raise
        self.unread += 1

    def read(self) -> Any:
        """The reply to the oldest command sent and not yet read; an error reply raises."""
        if self.unread <= 0 or self._conn is None:
            raise RuntimeError("no reply to read: nothing was sent")
        try:
            reply = self._conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            self._lost()
            raise
        except redis.ResponseError:
            self.unread -= 1
            raise
        self.unread -= 1
        return reply

    def close(self) -> None:
        """Give the connection back to the pool: as it is when every reply was read, so
        whoever takes it next (the pool hands out the last one given back first) need not
        connect again; disconnected when replies are still unread, or the next command
        would read one of them as its own."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self.unread:
                conn.disconnect()  # type: ignore[no-untyped-call]
            self._pool.release(conn)
        self.unread = 0

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._pool.get_connection()
        return self._conn

    def _lost(self) -> None:
        assert self._conn is not None
        self._conn.disconnect()  # type: ignore[no-untyped-call]
        self.unread = 0


def deferred_for(client: Client) -> Deferred | None:
    """A ``Deferred`` on ``client``'s pool; None on a cluster, where the slots decide which
    node each command goes to and only redis-py's cluster client knows them: there every
    call waits for its reply, through the client."""
    if topology_of(client).cluster:
        return None
    assert isinstance(client, redis.Redis)
    return Deferred(client)


class PackedScript:
    """A registered script called like redis-py's ``Script`` (``script(keys=, args=)``), its
    EVALSHA packed by hiredis in one call: redis-py's own packing walks every argument in
    Python first, a sixth of a producer's CPU when it admits 500 requests per call.

    Lost connections are retried with the client's number of retries and
    ``connection.reconnect_backoff``, but never past ``deadline`` (``time.monotonic``):
    every read waits at most until then, and a call that reaches it raises
    ``redis.TimeoutError``. A server that lost the script (NOSCRIPT) gets it loaded on the
    same connection (no second connection taken from the pool while holding this one)."""

    def __init__(self, client: redis.Redis, script: Script) -> None:
        self._pool = client.connection_pool
        self._script = script
        self.sha = script.sha

    def __call__(
        self,
        keys: Sequence[str],
        args: Sequence[bytes | str | int],
        deadline: float | None = None,
    ) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        return _on_pool(self._pool, command, deadline, self._script.script)


def bounded_command(client: Any, args: Sequence[bytes | str | int], deadline: float | None) -> Any:
    """One command on a plain sync client, retried as ``PackedScript`` does and never past
    ``deadline``; through the client's own API for any other client (no bound there)."""
    if type(client) is not redis.Redis:
        return client.execute_command(*args)
    return _on_pool(client.connection_pool, tuple(args), deadline)


def _on_pool(
    pool: redis.ConnectionPool,
    command: tuple[bytes | str | int, ...],
    deadline: float | None,
    script: Any = None,
) -> Any:
    """``command`` packed by hiredis and run on one connection taken from ``pool``."""
    packed = hiredis.pack_command(command)  # type: ignore[arg-type]
    conn = pool.get_connection()
    try:
        return _call(conn, packed, deadline, script)
    finally:
        pool.release(conn)


def _call(conn: Connection, packed: bytes, deadline: float | None, script: Any = None) -> Any:
    failures = 0
    while True:
        try:
            return _send_and_read(conn, packed, deadline)
        except NoScriptError:
            if not script:
                raise
            conn.send_command("SCRIPT", "LOAD", script)  # type: ignore[no-untyped-call]
            _read(conn, deadline)
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()  # type: ignore[no-untyped-call]
            failures += 1
            retries = conn.retry.get_retries()
            pause = _BACKOFF.compute(failures)
            left = _left(deadline)
            if (0 <= retries < failures) or (left is not None and left <= pause):
                raise
            time.sleep(pause)


_BACKOFF = reconnect_backoff()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _read(conn: Connection, deadline: float | None) -> Any:
    left = _left(deadline)
    if left is None:
        return conn.read_response()
    if left <= 0:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise redis.TimeoutError("deadline passed before the reply")
    return conn.read_response(timeout=left)


def _send_and_read(conn: Connection, packed: bytes, deadline: float | None) -> Any:
    conn.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
    return _read(conn, deadline)


class UnboundedScript:
    """A redis-py ``Script`` of a client whose connections this module does not drive
    (a cluster, sync or asyncio), called like a PackedScript: ``deadline`` is accepted and not
    enforced here (the client's own socket timeouts and retries bound the call)."""

    def __init__(self, script: Any) -> None:
        self._script = script
        self.sha = script.sha

    def __call__(
        self,
        keys: Sequence[str],
        args: Sequence[bytes | str | int],
        deadline: float | None = None,
    ) -> Any:
        return self._script(keys=keys, args=args)


def packed_script(client: Any, script: Any) -> Any:
    """``script`` as a PackedScript for a plain sync client, an AsyncPackedScript for a plain
    asyncio one; wrapped as an UnboundedScript for any other (cluster)."""
    if type(client) is redis.Redis:
        return PackedScript(client, script)
    if type(client) is AsyncRedis:
        return AsyncPackedScript(client, script)
    return UnboundedScript(script)
