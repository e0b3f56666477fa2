"""Commands sent now and answered later, on a connection of their own.

The worker sends a batch's ``finish_batch`` call and goes on with the next batch while Redis
runs it: the reply is read a batch later, by when it has long arrived. redis-py's client
API waits for every reply, so this uses its connection-level API (``send_packed_command``
and ``read_response``) with hiredis packing the command, on one connection taken from the
client's pool for this purpose alone. Replies are parsed by redis-py's own parser (hiredis);
error replies raise as they do through the client (``NoScriptError`` and so on).
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.connection import Connection


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
