"""A worker stopped under load drains on the connections it has, so its stop never waits on a
new one.

A new connection can hang where the old ones work: in a compose network under podman 4.3
(aardvark-dns 1.4) the service names stop resolving for tens of seconds each time a container
joins or leaves the network, and a connect to ``redis`` waits for the resolver (5 s a server
and attempt). tests/compose's drained worker once took 30 s to stop so: its writer's
connection went back to the pool closed, the heartbeat's removal took it next and connected
again. Here the new connection hangs through a proxy (``FaultProxy.stall_new``), by design.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import redis

from helpers.faultproxy import FaultProxy
from helpers.servers import suite_server
from helpers.workers import start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.keys import GROUP, KeySpace

CHUNK = 16
CHUNK_EVERY_S = 0.02  # the load's cadence (~800 requests/s), not a synchronisation
# The worker's own connections once it has served a while: its reads', its writer's (results
# sent, replies read a batch later) and its heartbeat's.
STEADY_CONNECTIONS = 3
# The drain has one running echo batch to finish and write: milliseconds. A connect that
# hangs costs the worker's socket timeout (block_ms + 10 s) and then its retries.
DRAINED_WITHIN_S = 5.0
STILL_DRAINING_S = 30.0  # past this the test stops waiting and says so


class Load:
    """Submits a chunk of echo requests every CHUNK_EVERY_S on a thread, straight to Redis."""

    def __init__(self, url: str, namespace: str, queue: str) -> None:
        self._producer = Producer.from_url(url, namespace=namespace)
        self._queue = queue
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.close()

    def _run(self) -> None:
        while not self._stop.wait(CHUNK_EVERY_S):
            self._producer.submit_many(self._queue, list(range(CHUNK)), timeout=60)
            self.sent += CHUNK


def test_a_worker_stopped_under_load_drains_without_a_new_connection(tmp_path: Path) -> None:
    namespace, queue = f"drain{uuid.uuid4().hex[:6]}", "drain"
    keys = KeySpace(namespace).queue(queue)
    with (
        EmbeddedRedis(directory=tmp_path, command=suite_server().command) as server,
        FaultProxy(server.port) as proxy,
    ):
        worker = wait_serving(start_worker(proxy.url, namespace, [queue], log_dir=str(tmp_path)))
        client = redis.Redis.from_url(server.url)
        try:
            with Load(server.url, namespace, queue) as load:
                wait_until(lambda: proxy.connections() >= STEADY_CONNECTIONS, 30,
                           f"the worker's {STEADY_CONNECTIONS} connections")  # fmt: skip
                wait_until(lambda: client.exists(keys.worker(worker.name)) and int(
                    client.hget(keys.worker(worker.name), "items") or 0) >= 10 * CHUNK, 30,
                    "the worker to have answered some load")  # fmt: skip
                proxy.stall_new()
                opened = proxy.accepted
                began = time.monotonic()
                worker.proc.send_signal(signal.SIGTERM)
                try:
                    code = worker.proc.wait(timeout=STILL_DRAINING_S)
                except subprocess.TimeoutExpired:
                    raise AssertionError(
                        f"still draining {STILL_DRAINING_S:g} s after SIGTERM, "
                        f"{proxy.accepted - opened} connections opened since:\n"
                        f"{worker.log()[-3000:]}"
                    ) from None
                took = time.monotonic() - began
            print(f"drained in {took:.2f} s under load ({load.sent} sent)")
            assert code == 0, worker.log()
            assert f"worker {worker.name} stopped after" in worker.log()
            assert proxy.accepted == opened, "the drain opened a connection"
            assert took < DRAINED_WITHIN_S, worker.log()[-3000:]
            # It held nothing when it went: what it read is answered or back in the stream.
            consumers = client.xinfo_consumers(keys.stream, GROUP)
            assert worker.name.encode() not in [c["name"] for c in consumers], consumers
        finally:
            client.close()
            if worker.proc.poll() is None:
                worker.kill()
