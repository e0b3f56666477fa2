"""EmbeddedRedis: the private server every integration test relies on."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from redbatch import embedded
from redbatch.embedded import EmbeddedRedis, find_redis_server
from redbatch.errors import RedbatchError

pytestmark = pytest.mark.skipif(
    find_redis_server() is None and not os.environ.get("CI"),
    reason="redis-server is not on PATH",
)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a listening socket, so redis-server cannot bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_start_ping_set_get_and_stop_leaves_nothing() -> None:
    server = EmbeddedRedis()
    with server:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.port != 6379
        directory = server.dir
        pid = server.pid
        assert pid is not None
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
            client.set("k", b"v")
            assert client.get("k") == b"v"
            assert client.info("server")["process_id"] == pid
        finally:
            client.close()
    assert not server.running
    assert server.pid is None
    assert _pid_gone(pid)
    assert not directory.exists(), "an owned temporary directory is removed on stop()"
    server.stop()  # idempotent


def test_kill_then_restart_keeps_data_with_appendonly(tmp_path: Path) -> None:
    with EmbeddedRedis(directory=tmp_path, appendonly=True) as server:
        port = server.port
        client = redis.Redis.from_url(server.url)
        try:
            client.set("survivor", b"42")
            old_pid = server.pid
            assert old_pid is not None
            server.kill()
            assert not server.running
            assert _pid_gone(old_pid)
            with pytest.raises(redis.ConnectionError):
                client.ping()

            server.restart()
            assert server.port == port
            assert server.dir == tmp_path
            assert server.pid not in (None, old_pid)
            assert client.get("survivor") == b"42"
        finally:
            client.close()
    assert tmp_path.exists(), "a directory given by the caller is never removed"


def test_restart_without_appendonly_loses_data() -> None:
    # The counterpart of the test above: proves that survival comes from the AOF.
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("gone", b"1")
            server.kill()
            server.restart()
            assert client.get("gone") is None
        finally:
            client.close()


def test_extra_args_reach_the_server() -> None:
    with EmbeddedRedis(extra_args=["--maxmemory", "12345678"]) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": "12345678"}
        finally:
            client.close()


def test_taken_explicit_port_raises_with_log(busy_port: int) -> None:
    server = EmbeddedRedis(port=busy_port)
    with pytest.raises(RedbatchError, match="Address already in use"):
        server.start()
    assert not server.running


def test_picked_port_taken_in_race_is_retried_once(
    busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([busy_port, embedded._free_port()])
    monkeypatch.setattr(embedded, "_free_port", lambda: next(ports))
    with EmbeddedRedis() as server:
        assert server.port != busy_port
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_bad_argument_raises_with_server_message() -> None:
    server = EmbeddedRedis(extra_args=["--no-such-option", "1"])
    with pytest.raises(RedbatchError, match="no-such-option"):
        server.start()
    assert not server.running
    server.stop()


def test_missing_binary_raises() -> None:
    with pytest.raises(RedbatchError, match="not found"):
        EmbeddedRedis(binary="redis-server-does-not-exist").start()


def test_session_fixtures_give_a_private_server(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    assert redis_server.port != 6379
    assert redis_client.info("server")["process_id"] == redis_server.pid
    key = f"{namespace}:{queue}"
    redis_client.set(key, b"x")
    assert redis_client.get(key) == b"x"
