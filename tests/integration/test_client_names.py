"""Every connection of every part names itself (``CLIENT SETNAME``), so ``CLIENT LIST`` says
who is who: a worker, a scheduler, a dashboard, ``redbatch status --watch`` and a producer on
a private redis-server that nothing else uses."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers import subprocess_env
from helpers.dashboard import start_dashboard
from helpers.schedulers import start_scheduler, wait_running
from helpers.servers import suite_server
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import AsyncProducer
from redbatch.embedded import EmbeddedRedis

OBSERVER = "test:observer"  # this test's own connection, the only one not redbatch's


@pytest.fixture
def private_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(command=suite_server().command) as server:
        yield server


def names(client: redis.Redis) -> list[str]:
    """The ``name`` of every connection but the observer's (unnamed ones as "")."""
    return [c["name"] for c in client.client_list() if c["name"] != OBSERVER]


def test_client_list_names_every_part(
    private_server: EmbeddedRedis, namespace: str, queue: str, tmp_path: Path
) -> None:
    url = private_server.url
    observer = redis.Redis.from_url(url, client_name=OBSERVER)
    started: list[WorkerProcess] = []
    watch = None
    dashboard = None
    try:
        worker = start_worker(url, namespace, [queue], log_dir=str(tmp_path))
        started.append(worker)
        scheduler = start_scheduler(url, namespace, log_dir=str(tmp_path))
        started.append(scheduler)
        wait_serving(worker)
        wait_running(scheduler)
        dashboard = start_dashboard("--redis-url", url, "--namespace", namespace)
        watch_log = tmp_path / "watch.log"
        with watch_log.open("wb") as log:
            watch = subprocess.Popen(
                [sys.executable, "-m", "redbatch", "status", "--watch", "--redis-url", url],
                env=subprocess_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        host = socket.gethostname()
        expected = {
            f"redbatch:worker:{worker.name}",
            f"redbatch:scheduler:{host}-{scheduler.proc.pid}",
            f"redbatch:dashboard:{host}-{dashboard.proc.pid}",
            "redbatch:ops:status",
            "redbatch:producer:web-1",
            "redbatch:listener:web-1",
        }

        async def produce_and_look() -> list[str]:
            async with AsyncProducer.from_url(url, namespace=namespace, name="web-1") as producer:
                assert await producer.call(queue, "hello", timeout=30) == "hello"
                # Polled from a thread: the producer's listener runs on this loop meanwhile.
                connected = lambda: expected <= set(names(observer))  # noqa: E731
                await asyncio.to_thread(wait_until, connected, 30.0, f"{expected} connected")
                return names(observer)

        seen = asyncio.run(produce_and_look())
        assert [name for name in seen if not name.startswith("redbatch:")] == [], seen
        watch.send_signal(signal.SIGINT)  # Ctrl-C ends a watch: exit 0
        assert watch.wait(15) == 0, watch_log.read_text()
        assert dashboard.stop() == 0
        for process in started:
            assert process.stop() == 0, process.log()
    finally:
        if dashboard is not None:
            dashboard.kill()
        for leftover in (watch, *(p.proc for p in started)):
            if leftover is not None and leftover.poll() is None:
                leftover.kill()
                leftover.wait(15)
        observer.close()
