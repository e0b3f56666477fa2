"""Producers under faults (issue 13): every wait ends by its deadline whatever Redis or the
network does, a server that refuses is told apart from one that is gone, and a re-sent
admission never adds a request twice.

A private redis-server per module (DEBUG on; CLIENT PAUSE, DEBUG SLEEP and maxmemory must
not reach other tests), the fault proxy of ``helpers.faultproxy`` for silent networks and
lost replies, a network namespace with a dropping qdisc for packet loss.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers import subprocess_env
from helpers.entries import wait_cancel_key
from helpers.faultproxy import FaultProxy
from helpers.servers import suite_server
from helpers.workers import start_worker, wait_until
from redbatch import AsyncProducer, Producer, RedbatchError, RedisRefused, ResultTimeout
from redbatch.embedded import EmbeddedRedis
from redbatch.errors import ConnectionFailed
from redbatch.protocol.keys import KeySpace

# The bound: a wait returns within its timeout plus a few ms. Measured here: 1-4 ms
# over; the assertions leave 50 ms for a loaded machine.
SLACK_S = 0.05
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    directory = tmp_path_factory.mktemp("faults")
    with EmbeddedRedis(
        directory=directory,
        extra_args=["--enable-debug-command", "yes"],
        command=suite_server().command,
    ) as srv:
        yield srv


@pytest.fixture
def admin(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


@pytest.fixture
def names() -> tuple[str, str]:
    return "f" + uuid.uuid4().hex[:8], "q" + uuid.uuid4().hex[:8]


def elapsed(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


async def elapsed_async(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        await fn()
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


def assert_on_time(took: tuple[float, BaseException | None], timeout: float) -> None:
    seconds, error = took
    assert isinstance(error, ResultTimeout), error
    assert timeout - 0.01 <= seconds <= timeout + SLACK_S, f"took {seconds:.3f} s"


@contextmanager
def stalled(server: EmbeddedRedis, admin: redis.Redis, how: str) -> Iterator[None]:
    """Redis stalled for about 2 s: its clients paused, or the server busy sleeping (DEBUG
    SLEEP, sent on a raw socket: Redis starts it the moment it reads it, and its reply is
    not waited for). Ends when Redis answers again."""
    sleeper = None
    if how == "pause":
        admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
    else:
        sleeper = socket.create_connection(("127.0.0.1", server.port))
        sleeper.sendall(b"DEBUG SLEEP 2\r\n")
    try:
        yield
    finally:
        wait_until(admin.ping, timeout=10, what="Redis answers again")
        if sleeper is not None:
            sleeper.close()


@pytest.mark.parametrize("how", ["pause", "sleep"])
def test_sync_waits_end_on_time_while_redis_stalls(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str], how: str
) -> None:
    namespace, queue = names
    with Producer.from_url(server.url, namespace=namespace) as producer:
        handle = producer.submit(queue, 1)  # no worker: it waits
        with stalled(server, admin, how):
            assert_on_time(elapsed(lambda: handle.result(timeout=TIMEOUT_S)), TIMEOUT_S)
            took = elapsed(lambda: producer.call(queue, 2, timeout=TIMEOUT_S))
            assert_on_time(took, TIMEOUT_S)
            took = elapsed(lambda: producer.map(queue, [3, 4], timeout=TIMEOUT_S))
            assert_on_time(took, TIMEOUT_S)
        # The cancel went afterwards, in the background.
        cancel = KeySpace(namespace).queue(queue).cancel(handle.id)
        wait_until(lambda: admin.exists(cancel), timeout=10, what="the timed-out request cancelled")


@pytest.mark.parametrize("how", ["pause", "sleep"])
def test_async_waits_end_on_time_while_redis_stalls(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str], how: str
) -> None:
    namespace, queue = names

    async def scenario() -> None:
        async with AsyncProducer.from_url(server.url, namespace=namespace) as producer:
            handle = await producer.submit(queue, 1)
            with stalled(server, admin, how):
                took = await elapsed_async(lambda: handle.result(timeout=TIMEOUT_S))
                assert_on_time(took, TIMEOUT_S)
                took = await elapsed_async(lambda: producer.call(queue, 2, timeout=TIMEOUT_S))
                assert_on_time(took, TIMEOUT_S)
                took = await elapsed_async(lambda: producer.map(queue, [3], timeout=TIMEOUT_S))
                assert_on_time(took, TIMEOUT_S)
            cancel = KeySpace(namespace).queue(queue).cancel(handle.id)
            for _ in range(200):  # the cancel task runs on this loop
                if admin.exists(cancel):
                    break
                await asyncio.sleep(0.05)
            assert admin.exists(cancel)

    asyncio.run(scenario())


def test_waits_end_on_time_on_a_silent_network(
    server: EmbeddedRedis, names: tuple[str, str]
) -> None:
    """Every byte black-holed, connections left open (the proxy's ``drop``)."""
    namespace, queue = names
    with (
        FaultProxy(server.port) as proxy,
        Producer.from_url(proxy.url, namespace=namespace) as producer,
    ):
        handle = producer.submit(queue, 1)
        proxy.drop()
        assert_on_time(elapsed(lambda: handle.result(timeout=1.0)), 1.0)
        assert_on_time(elapsed(lambda: producer.call(queue, 2, timeout=1.0)), 1.0)
        # A second call needs a new connection (the first was given up): connecting counts.
        assert_on_time(elapsed(lambda: producer.call(queue, 3, timeout=1.0)), 1.0)
        proxy.release()


def _netns_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("tc"):
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="needs unshare -n and tc (root)")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_waits_end_on_time_under_packet_loss(mode: str) -> None:
    """Packets dropped on loopback (tc tbf at 8 bit/s in a namespace of its own)."""
    tests_dir = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "helpers.netloss", mode],
        capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=tests_dir,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    for wait in ("result", "call", "map"):
        assert found[wait]["raised"] == "ResultTimeout", found
        assert found[wait]["seconds"] <= 1.0 + SLACK_S, found


def test_a_refusing_server_raises_redis_refused(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str]
) -> None:
    namespace, queue = names
    with Producer.from_url(server.url, namespace=namespace) as producer:
        producer.submit(queue, 0)  # the queue exists before memory runs out
        admin.config_set("maxmemory", 1)
        try:
            with pytest.raises(RedisRefused) as refused:
                producer.submit(queue, 1)
        finally:
            admin.config_set("maxmemory", 0)
        assert refused.value.reason == "OOM"
        assert isinstance(refused.value, RedbatchError)
        assert not isinstance(refused.value, ConnectionFailed)
        assert "OOM" in str(refused.value)
        producer.submit(queue, 2)  # memory back: admitted


def test_async_refusal_is_redis_refused(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str]
) -> None:
    namespace, queue = names

    async def scenario() -> None:
        async with AsyncProducer.from_url(server.url, namespace=namespace) as producer:
            await producer.submit(queue, 0)
            admin.config_set("maxmemory", 1)
            try:
                with pytest.raises(RedisRefused, match="OOM"):
                    await producer.submit(queue, 1)
            finally:
                admin.config_set("maxmemory", 0)

    asyncio.run(scenario())


def test_a_swallowed_admission_reply_adds_each_request_once(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str], tmp_path: Path
) -> None:
    """The admission runs, its reply is lost with the connection, redis-py sends it again:
    the script knows it (producer id + sequence number) and adds nothing the second time."""
    namespace, queue = names
    stream = KeySpace(namespace).queue(queue).stream
    with (
        FaultProxy(server.port) as proxy,
        Producer.from_url(proxy.url, namespace=namespace) as producer,
    ):
        producer.submit(queue, -1)  # queue created, script loaded
        assert admin.xlen(stream) == 1
        proxy.swallow("EVALSHA")
        handles = producer.submit_many(queue, list(range(50)), chunk=25)
        assert proxy.swallowed == 1
        assert admin.xlen(stream) == 51  # not 76: the re-sent chunk added nothing
        proxy.swallow("EVALSHA")
        once = producer.submit(queue, 99, id="once-1")
        assert proxy.swallowed == 2
        assert admin.xlen(stream) == 52
        worker = start_worker(server.url, namespace, [queue], log_dir=str(tmp_path))
        try:
            assert [h.result(timeout=30) for h in handles] == list(range(50))
            assert once.result(timeout=30) == 99
        finally:
            assert worker.stop() == 0


def test_async_swallowed_admission_reply_adds_each_request_once(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str]
) -> None:
    namespace, queue = names
    stream = KeySpace(namespace).queue(queue).stream

    async def scenario() -> None:
        with FaultProxy(server.port) as proxy:
            async with AsyncProducer.from_url(proxy.url, namespace=namespace) as producer:
                await producer.submit(queue, -1)
                proxy.swallow("EVALSHA")
                await producer.submit_many(queue, list(range(40)), chunk=20)
                assert proxy.swallowed == 1
        assert admin.xlen(stream) == 41

    asyncio.run(scenario())


def test_noscript_fallback_holds_two_connections(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str]
) -> None:
    """Against an empty script cache the admission loads its script on the connection it
    holds: a producer holds its listener's connection and one more, not three."""
    namespace, queue = names
    admin.script_flush()
    with (
        FaultProxy(server.port) as proxy,
        Producer.from_url(proxy.url, namespace=namespace) as producer,
    ):
        producer.submit(queue, 1)
        assert proxy.commands_seen["SCRIPT"] >= 1  # it did meet NOSCRIPT
        assert proxy.connections() == 2


def test_a_joined_request_is_cancelled_only_by_its_last_waiter(
    server: EmbeddedRedis, admin: redis.Redis, names: tuple[str, str]
) -> None:
    namespace, queue = names
    keys = KeySpace(namespace).queue(queue)
    with (
        Producer.from_url(server.url, namespace=namespace) as first,
        Producer.from_url(server.url, namespace=namespace) as second,
    ):
        one = first.submit(queue, 1, id="shared")
        two = second.submit(queue, 1, id="shared")
        with pytest.raises(ResultTimeout):
            one.result(timeout=0.2)
        wait_until(
            lambda: first.id.encode() not in admin.smembers(keys.guard("shared")),
            timeout=10, what="the first producer left the request",
        )  # fmt: skip
        assert not admin.exists(keys.cancel("shared"))  # the second still waits
        with pytest.raises(ResultTimeout):
            two.result(timeout=0.2)
        wait_cancel_key(admin, keys, "shared", timeout=10)
