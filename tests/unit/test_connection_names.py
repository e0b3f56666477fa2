"""The names connections give themselves (CLIENT SETNAME), and that every client keeps one."""

from __future__ import annotations

from redbatch.transport.cluster import connect_any, dedicated
from redbatch.transport.connection import check_url, connect, connection_name


def test_a_name_says_redbatch_the_role_and_who() -> None:
    assert connection_name("worker", "gpu1-4242-9f3c2a") == "redbatch:worker:gpu1-4242-9f3c2a"


def test_characters_redis_refuses_in_a_name_become_underscores() -> None:
    # CLIENT SETNAME accepts printable ASCII without spaces only ("!" to "~").
    assert connection_name("ops", "my host\n\u00e9") == "redbatch:ops:my_host__"


def test_a_client_and_its_dedicated_connection_keep_the_name() -> None:
    # No I/O: redis-py opens connections on first use, and cluster=False skips the probe.
    url = check_url("redis://127.0.0.1:1/0")
    name = connection_name("worker", "w1")
    client = connect_any(url, cluster=False, client_name=name)
    clients = [
        client,
        dedicated(client, socket_timeout=10.0, retries=1),
        connect(url, client_name=name),
    ]
    try:
        for one in clients:
            assert one.connection_pool.connection_kwargs["client_name"] == name  # type: ignore[union-attr]
    finally:
        for one in clients:
            one.close()
