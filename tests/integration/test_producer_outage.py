"""Redis goes away and comes back under waiting producers (issue 7).

Each test runs its own restartable redis-server. The producers' reply listener must ride out
the outage (redis-py reconnects with backoff), say so in one warning per outage, pick up
replies pushed once Redis is back, and read the stored result of a request whose reply was
lost. No handle may hang: it gets its outcome, or ResultTimeout at its timeout; a submit
while Redis is down raises ConnectionFailed within a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.servers import suite_server
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import AsyncProducer, Producer, ResultTimeout
from redbatch.embedded import EmbeddedRedis
from redbatch.errors import ConnectionFailed
from redbatch.protocol import codec
from redbatch.protocol.fields import OK, Outcome, result_fields
from redbatch.protocol.keys import GROUP, KeySpace

WAIT = 60.0  # generous bound on waits that should end within seconds
# How long the outage lasts: several of the listener's reconnect rounds (each is redis-py's
# Retry with backoff), so one warning per attempt would show. A duration, not a sync point.
OUTAGE_S = 3.0
# How late past its timeout a waiting handle may end (scheduling noise only).
MARGIN_S = 0.5
SUBMIT_BOUND_S = 5.0  # redis-py's retries of one submit against a refused port end well before
UNAVAILABLE = "Redis unavailable"
BACK = "Redis reachable again"


@pytest.fixture
def names() -> tuple[str, str]:
    return f"o{uuid.uuid4().hex[:6]}", "outage"


@pytest.fixture
def listener_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="redbatch.producer")
    return caplog


def listener_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("redbatch.producer") and text in r.getMessage()
    ]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRedis]]:
    servers: list[EmbeddedRedis] = []

    def start(*, appendonly: bool) -> EmbeddedRedis:
        directory = tmp_path / f"redis{len(servers)}"
        directory.mkdir()
        extra = ["--appendfsync", "always"] if appendonly else []
        server = EmbeddedRedis(
            directory=directory,
            appendonly=appendonly,
            extra_args=extra,
            command=suite_server().command,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(url: str, namespace: str, queue: str, *extra: str, **kw: Any) -> WorkerProcess:
        worker = start_worker(url, namespace, [queue], log_dir=str(tmp_path), extra=extra, **kw)
        started.append(worker)
        return worker

    yield start
    failures = [f"{w.name}:\n{w.log()[-3000:]}" for w in started if w.stop() != 0]
    assert not failures, "\n".join(failures)


def lose_reply(client: redis.Redis, namespace: str, queue: str, request_id: str) -> None:
    """What a lost reply leaves behind: the request finished (its entry is gone, its result
    hash is stored) but no reply element reached the producer's list."""
    keys = KeySpace(namespace).queue(queue)
    for entry_id, fields in client.xrange(keys.stream):
        if fields[b"id"] == request_id.encode():
            client.xdel(keys.stream, entry_id)
    body = codec.encode("from the result hash", codec.MSGPACK, codec.DEFAULT_LIMITS)
    client.hset(keys.result(request_id), mapping=result_fields(Outcome(request_id, OK, body)))


def check_one_line_per_outage(caplog: pytest.LogCaptureFixture, outages: int = 1) -> None:
    lost = listener_lines(caplog, UNAVAILABLE)
    assert [r.levelno for r in lost] == [logging.WARNING] * outages, [r.message for r in lost]
    back = listener_lines(caplog, BACK)
    assert [r.levelno for r in back] == [logging.INFO] * outages, [r.message for r in back]


# -- (a) with persistence: every waiting handle gets its result ------------------------------


def test_sync_handles_waiting_across_a_restart_get_their_results(
    server_factory: Callable[..., EmbeddedRedis],
    workers: Callable[..., WorkerProcess],
    names: tuple[str, str],
    listener_log: pytest.LogCaptureFixture,
) -> None:
    namespace, queue = names
    server = server_factory(appendonly=True)
    client = redis.Redis.from_url(server.url)
    try:
        with Producer.from_url(server.url, namespace=namespace) as producer:
            handles = [producer.submit(queue, i, timeout=WAIT) for i in range(4)]
            orphan = producer.submit(queue, "never run", timeout=WAIT)
            lose_reply(client, namespace, queue, orphan.id)

            server.kill()
            wait_until(lambda: listener_lines(listener_log, UNAVAILABLE), what="the warning")
            # (d) a submit while Redis is down: ConnectionFailed, one line, bounded time.
            started = time.monotonic()
            with pytest.raises(ConnectionFailed, match=f"cannot submit to queue {queue}") as e:
                producer.submit(queue, "lost", timeout=WAIT)
            assert time.monotonic() - started < SUBMIT_BOUND_S
            assert "\n" not in str(e.value)
            # A wait that times out during the outage ends at its timeout (the cancel that
            # cancel_on_timeout would send is skipped while Redis is known to be down).
            started = time.monotonic()
            with pytest.raises(ResultTimeout):
                handles[0].result(timeout=0.5)
            assert time.monotonic() - started < 0.5 + MARGIN_S
            time.sleep(OUTAGE_S)  # the outage lasts (not a synchronisation)

            server.restart()
            # The stored result answers the handle whose reply was lost, with no worker.
            assert orphan.result(timeout=WAIT) == "from the result hash"
            workers(server.url, namespace, queue)
            assert [h.result(timeout=WAIT) for h in handles] == [0, 1, 2, 3]
            # The listener serves on: a request submitted after the outage gets its result.
            assert producer.call(queue, "after", timeout=WAIT) == "after"
        check_one_line_per_outage(listener_log)
    finally:
        client.close()


def test_async_handles_waiting_across_a_restart_get_their_results(
    server_factory: Callable[..., EmbeddedRedis],
    workers: Callable[..., WorkerProcess],
    names: tuple[str, str],
    listener_log: pytest.LogCaptureFixture,
) -> None:
    namespace, queue = names
    server = server_factory(appendonly=True)
    client = redis.Redis.from_url(server.url)

    async def poll(condition: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    async def main() -> None:
        async with AsyncProducer.from_url(server.url, namespace=namespace) as producer:
            handles = [await producer.submit(queue, i, timeout=WAIT) for i in range(4)]
            orphan = await producer.submit(queue, "never run", timeout=WAIT)
            lose_reply(client, namespace, queue, orphan.id)

            server.kill()
            await poll(lambda: listener_lines(listener_log, UNAVAILABLE), "the warning")
            started = time.monotonic()
            with pytest.raises(ConnectionFailed, match=f"cannot submit to queue {queue}"):
                await producer.submit(queue, "lost", timeout=WAIT)
            assert time.monotonic() - started < SUBMIT_BOUND_S
            started = time.monotonic()
            with pytest.raises(ResultTimeout):
                await handles[0].result(timeout=0.5)
            assert time.monotonic() - started < 0.5 + MARGIN_S
            await asyncio.sleep(OUTAGE_S)  # the outage lasts (not a synchronisation)

            server.restart()
            assert await orphan.result(timeout=WAIT) == "from the result hash"
            workers(server.url, namespace, queue)
            assert [await h.result(timeout=WAIT) for h in handles] == [0, 1, 2, 3]
            assert await producer.call(queue, "after", timeout=WAIT) == "after"

    try:
        asyncio.run(main())
        check_one_line_per_outage(listener_log)
    finally:
        client.close()


# -- (b) without persistence: every handle ends by its timeout --------------------------------


def test_without_persistence_every_waiting_handle_ends_by_its_timeout(
    server_factory: Callable[..., EmbeddedRedis],
    workers: Callable[..., WorkerProcess],
    names: tuple[str, str],
    listener_log: pytest.LogCaptureFixture,
) -> None:
    """The running batch's results are written once Redis is back (the worker keeps them),
    so its handles get them; requests that were only in the stream are gone with it, and
    their handles raise ResultTimeout at their timeout, not later."""
    namespace, queue = names
    keys = KeySpace(namespace).queue(queue)
    server = server_factory(appendonly=False)
    client = redis.Redis.from_url(server.url)
    wait_serving(
        workers(
            server.url, namespace, queue,
            "--handler-option", "seconds=1.5", "--max-batch-size", "2",
            handler="redbatch.handlers:sleep",
        )
    )  # fmt: skip
    try:
        with Producer.from_url(server.url, namespace=namespace) as producer:
            running = [producer.submit(queue, i, timeout=WAIT) for i in range(2)]
            wait_until(
                lambda: any(
                    r["times_delivered"] >= 2
                    for r in client.xpending_range(keys.stream, GROUP, "-", "+", 10)
                ),
                what="the batch to start",
            )
            queued = [producer.submit(queue, i, timeout=WAIT) for i in range(2, 8)]
            server.kill()
            wait_until(lambda: listener_lines(listener_log, UNAVAILABLE), what="the warning")
            server.restart()  # empty: no AOF, no RDB

            deadline = time.monotonic() + 5.0  # every handle's local wait ends here
            ends: dict[str, tuple[Any, float]] = {}
            for handle in [*running, *queued]:
                try:
                    value: Any = handle.result(timeout=max(0.0, deadline - time.monotonic()))
                except ResultTimeout as exc:
                    value = exc
                ends[handle.id] = (value, time.monotonic())
        assert [ends[h.id][0] for h in running] == [0, 1]
        for number, handle in enumerate(queued, start=2):
            value, ended = ends[handle.id]
            assert value == number or isinstance(value, ResultTimeout), value
            assert ended < deadline + MARGIN_S, f"{handle.id} ended {ended - deadline:.2f} s late"
        check_one_line_per_outage(listener_log)
    finally:
        client.close()
