"""Commands sent now and answered later, on a connection of their own.

The worker sends a batch's ``finish_batch`` call and goes on with the next batch while Redis
runs it: the reply is read a batch later, by when it has long arrived. redis-py's client
API waits for every reply, so this uses its connection-level API (``send_packed_command``
and ``read_response``) with hiredis packing the command, on one connection taken from the
client's pool for this purpose alone. Replies are parsed by redis-py's own parser (hiredis);
error replies raise as they do through the client (``NoScriptError`` and so on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import NoScriptError


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
        if self._conn is not None:
            conn, self._conn = self._conn, None
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


class PackedScript:
    """A registered script called like redis-py's ``Script`` (``script(keys=, args=)``), its
    EVALSHA packed by hiredis in one call: redis-py's own packing walks every argument in
    Python first, a sixth of a producer's CPU when it admits 500 requests per call. Lost
    connections are retried by the client's own ``Retry``; a server that lost the script
    (NOSCRIPT) gets it through redis-py's ``Script``, which loads it."""

    def __init__(self, client: redis.Redis, script: Script) -> None:
        self._pool = client.connection_pool
        self._script = script
        self.sha = script.sha

    def __call__(self, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        packed = hiredis.pack_command(command)  # type: ignore[arg-type]
        conn = self._pool.get_connection()
        try:
            return conn.retry.call_with_retry(
                lambda: _send_and_read(conn, packed),
                lambda _error: conn.disconnect(),  # type: ignore[no-untyped-call]
            )
        except NoScriptError:
            return self._script(keys=keys, args=args)
        finally:
            self._pool.release(conn)


def _send_and_read(conn: Connection, packed: bytes) -> Any:
    conn.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
    return conn.read_response()


def packed_script(client: Any, script: Any) -> Any:
    """``script`` as a PackedScript for a plain sync client; as it is for any other (asyncio,
    cluster), whose connections this module does not drive."""
    return PackedScript(client, script) if type(client) is redis.Redis else script
