"""``redbatch demo --stream``: streaming on this machine, words appearing live.

A private redis-server (unless a URL is given), a scheduler and worker processes running the
bigram text generator (``redbatch.models.bigram``, no dependencies), and one producer that
starts several streams at once: they run in one batch, the first one's words are printed as
the worker makes them, then every text and the figures (chunks per second, first-chunk
latency). Everything started is stopped on the way out, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from rich.console import Console
from rich.table import Table

from redbatch.errors import ConfigError
from redbatch.launch import child_processes, redis_url_or_embedded
from redbatch.producer import AsyncProducer

QUEUE = "story"
HANDLER = "redbatch.models.bigram:generate"
_READY_TIMEOUT_S = 120.0
_STREAM_TIMEOUT_S = 120.0
_PROMPTS = (
    "Once upon a time the fox",
    "The tortoise said",
    "A lion",
    "The crow",
    "On a summer day",
    "The mouse",
    "The hare",
    "The ant",
)


def commands(url: str, namespace: str, workers: int, step_s: float) -> list[list[str]]:
    common = ["--redis-url", url, "--namespace", namespace, "--log-level", "WARNING"]
    worker = [
        sys.executable, "-m", "redbatch", "worker", QUEUE, "--handler", HANDLER,
        "--handler-option", f"step_s={step_s}", "--handler-option", "max_tokens=40", *common,
    ]  # fmt: skip
    return [[sys.executable, "-m", "redbatch", "scheduler", *common]] + [worker] * workers


def run(*, redis_url: str | None, streams: int, workers: int, step_s: float = 0.05) -> None:
    if streams < 1 or workers < 1:
        raise ConfigError("--requests and --workers must be at least 1")
    console = Console(stderr=True)
    namespace = f"demo{uuid.uuid4().hex[:6]}"
    with (
        redis_url_or_embedded(redis_url, console) as url,
        child_processes(commands(url, namespace, workers, step_s)),
    ):
        console.print(f"a scheduler and {workers} text-generating workers are starting…")
        texts, chunks, first_ms, elapsed = asyncio.run(_drive(url, namespace, streams))
    out = Console()
    for prompt, text in zip(_prompts(streams)[1:], texts[1:], strict=True):
        out.print(f"[bold]{prompt}[/bold] {text}")
    table = Table(title=f"redbatch demo --stream: {streams} streams in one batch")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("chunks (words) received", f"{chunks}")
    table.add_row("chunks per second", f"{chunks / elapsed:,.0f}")
    table.add_row(
        "first chunk after submit (p50)", f"{sorted(first_ms)[len(first_ms) // 2]:.1f} ms"
    )
    out.print(table)


def _prompts(streams: int) -> list[str]:
    return [_PROMPTS[i % len(_PROMPTS)] for i in range(streams)]


async def _drive(
    url: str, namespace: str, streams: int
) -> tuple[list[str], int, list[float], float]:
    """Start every stream at once; print the first live. Returns each one's final text, the
    number of chunks received, each first chunk's latency (ms) and the time taken (s)."""
    async with AsyncProducer.from_url(url, namespace=namespace) as producer:
        # Waits for a worker process to come up (imports and warm-up take a moment).
        await producer.call(QUEUE, "warm", timeout=_READY_TIMEOUT_S)
        prompts = _prompts(streams)
        first_ms: list[float] = []
        counts = [0] * streams
        began = time.perf_counter()

        # One admission for all: the worker reads them together and runs them as one batch.
        handles = await producer.submit_many(QUEUE, prompts, stream=True, timeout=_STREAM_TIMEOUT_S)

        async def one(i: int) -> str:
            handle = handles[i]
            async for word in handle.stream(_STREAM_TIMEOUT_S):
                if not counts[i]:
                    first_ms.append((time.perf_counter() - began) * 1000)
                counts[i] += 1
                if i == 0:
                    sys.stdout.write(str(word))
                    sys.stdout.flush()
            text: str = await handle.result(_STREAM_TIMEOUT_S)
            return text

        sys.stdout.write(f"{prompts[0]} ")
        texts = await asyncio.gather(*(one(i) for i in range(streams)))
        elapsed = time.perf_counter() - began
        sys.stdout.write("\n")
    return list(texts), sum(counts), first_ms or [0.0], elapsed
