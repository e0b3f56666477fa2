"""transport.deferred.Deferred (the worker's results, sent now and read a batch later) against
a real server: what ``close`` gives back to the pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redbatch.transport.connection import connect
from redbatch.transport.deferred import Deferred


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client built as the worker's is (a blocking pool, which hands out the connection
    given back last first)."""
    client = connect(redis_url)
    try:
        yield client
    finally:
        client.close()


def test_closed_with_every_reply_read_it_leaves_its_connection_open(
    client: redis.Redis, namespace: str
) -> None:
    """A worker's drain runs on this connection next: connecting again would wait on name
    resolution and a handshake when it should take milliseconds."""
    deferred = Deferred(client)
    deferred.send("CLIENT", "ID")
    deferred.send("SET", f"{namespace}:k", "v")
    used = deferred.read()
    assert deferred.read() == b"OK"
    deferred.close()
    assert client.client_id() == used  # the same connection, still open


def test_closed_with_a_reply_unread_it_leaves_none_for_the_next_command(
    client: redis.Redis, namespace: str
) -> None:
    deferred = Deferred(client)
    deferred.send("CLIENT", "ID")
    used = deferred.read()
    deferred.send("SET", f"{namespace}:k", "v")  # its +OK never read
    deferred.close()
    assert client.get(f"{namespace}:k") == b"v"  # its own reply, not the stale +OK
    assert client.client_id() != used  # on a connection of its own
