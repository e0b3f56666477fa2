"""``redbatch demo``: the whole request path on this machine, started and cleaned up here.

A private redis-server (unless a URL is given), worker processes with the echo handler, and
one producer sending requests through them; it prints throughput and round-trip percentiles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from redbatch.embedded import EmbeddedRedis, find_redis_server
from redbatch.errors import ConfigError, RedbatchError
from redbatch.producer import Producer

_QUEUE = "demo"
_CHUNK = 250
_WORKER_READY_TIMEOUT_S = 30.0
_STOP_GRACE_S = 10.0


@contextlib.contextmanager
def _redis(url: str | None, console: Console) -> Iterator[str]:
    if url:
        yield url
        return
    if find_redis_server() is None:
        raise ConfigError(
            "redis-server is not on PATH: install it (apt-get install redis-server) "
            "or set REDBATCH_REDIS_URL to a Redis you have"
        )
    with EmbeddedRedis() as server:
        console.print(f"started a private redis-server on {server.url}")
        yield server.url


@contextlib.contextmanager
def _workers(url: str, namespace: str, count: int, max_batch_size: int) -> Iterator[None]:
    command = [
        sys.executable, "-m", "redbatch", "worker", _QUEUE,
        "--handler", "redbatch.handlers:echo",
        "--redis-url", url, "--namespace", namespace,
        "--max-batch-size", str(max_batch_size), "--log-level", "WARNING",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDBATCH_")}
    procs = [subprocess.Popen(command, env=env) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(*, redis_url: str | None, count: int, workers: int, max_batch_size: int) -> None:
    if count < 1 or workers < 1:
        raise ConfigError("--requests and --workers must be at least 1")
    console = Console(stderr=True)
    namespace = f"demo{uuid.uuid4().hex[:6]}"
    with (
        _redis(redis_url, console) as url,
        _workers(url, namespace, workers, max_batch_size),
        Producer.from_url(url, namespace=namespace) as producer,
    ):
        producer.ping()
        # The first call waits for a worker process to come up (imports take a moment).
        producer.call(_QUEUE, {"warm": True}, timeout=_WORKER_READY_TIMEOUT_S)
        round_trips = _send(producer, count)
    _report(console, count, workers, round_trips)


def _send(producer: Producer, count: int) -> list[float]:
    """Send ``count`` requests in pipelined chunks; returns each chunk's round trip (s)."""
    round_trips: list[float] = []
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("requests", total=count)
        for start in range(0, count, _CHUNK):
            payloads = [
                {"i": i, "text": f"request {i}"} for i in range(start, min(count, start + _CHUNK))
            ]
            began = time.perf_counter()
            results = producer.map(_QUEUE, payloads, timeout=60.0)
            round_trips.append(time.perf_counter() - began)
            if results != payloads:
                raise RedbatchError("demo: a result did not match its request")
            progress.advance(task, len(payloads))
    return round_trips


def _report(console: Console, count: int, workers: int, round_trips: list[float]) -> None:
    total = sum(round_trips)
    ordered = sorted(round_trips)

    def pct(p: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000:.1f} ms"

    table = Table(title=f"redbatch demo: {count} requests, {workers} echo workers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("throughput", f"{count / total:,.0f} requests/s")
    table.add_row(f"round trip of {_CHUNK} requests, p50", pct(0.5))
    table.add_row(f"round trip of {_CHUNK} requests, p99", pct(0.99))
    table.add_row("results matched", f"{count}/{count}")
    Console().print(table)
