"""Where a lone request's time goes: one request at a time through a real worker process.

    python benchmarks/lone_request.py [--requests 3000] [--max-wait-ms 0] [--strace]

A private Redis (EmbeddedRedis), one `redbatch worker` (echo) and, in this process, the
asyncio producer then the sync one, each sending one request and waiting for its result
before the next. Per producer: p50 latency, and CPU per request of the worker (each of its
threads), of Redis and of this process (/proc, user + system). ``--strace``: the system calls
per request of the worker and of this process (strace -c over the same calls, once more per
producer; strace slows them, so their latency is not printed). Run it with
``PYTHONPATH=<tree>/src`` on two trees for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib import cpu_seconds

from redbatch import AsyncProducer, Producer
from redbatch.embedded import EmbeddedRedis

QUEUE = "lone"
WARM_UP = 300
TICK = os.sysconf("SC_CLK_TCK")
COUNTED = ("futex", "sendto", "recvfrom", "poll", "epoll_wait", "getpid")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``: "main" (the worker's loop), then "thread 1",
    "thread 2"... in the order they started (the handler thread is the first the worker
    starts; Python's thread names do not reach /proc)."""
    found: dict[str, float] = {}
    for n, tid in enumerate(sorted(os.listdir(f"/proc/{pid}/task"), key=int)):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        found["main" if n == 0 else f"thread {n}"] = (int(fields[11]) + int(fields[12])) / TICK
    return found


@contextmanager
def traced(pid: int, calls: int, into: dict[str, dict[str, float]], who: str) -> Iterator[None]:
    """strace -c on ``pid`` (all its threads) while the block runs: calls per request."""
    out = Path(f"/tmp/lone_request_strace_{os.getpid()}_{who}.txt")
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-p", str(pid)], stderr=out.open("w"), stdout=subprocess.DEVNULL
    )
    time.sleep(0.5)  # attached
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
    per: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in COUNTED and parts[0][0].isdigit():
            per[parts[-1]] = int(parts[3]) / calls
    into[who] = per
    out.unlink()


class Sample:
    """CPU of the worker (per thread), Redis and this process between ``__init__`` and
    ``result``, per request."""

    def __init__(self, worker: int, redis_pid: int) -> None:
        self.worker, self.redis_pid = worker, redis_pid
        self.threads = thread_cpu(worker)
        self.redis, self.own = cpu_seconds(redis_pid), cpu_seconds(os.getpid())

    def result(self, latencies: list[float]) -> dict[str, object]:
        after, us = thread_cpu(self.worker), 1e6 / len(latencies)
        return {
            "p50_ms": round(statistics.median(latencies) * 1e3, 3),
            "worker_us": {t: round((after[t] - self.threads.get(t, 0.0)) * us) for t in after},
            "redis_us": round((cpu_seconds(self.redis_pid) - self.redis) * us),
            "producer_us": round((cpu_seconds(os.getpid()) - self.own) * us),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--max-wait-ms", type=int, default=0)
    parser.add_argument("--strace", action="store_true")
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        worker = subprocess.Popen(
            [sys.executable, "-m", "redbatch", "worker", QUEUE, "--redis-url", server.url,
             "--handler", "redbatch.handlers:echo", "--max-wait-ms", str(args.max_wait_ms)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert server.pid is not None
        try:
            report(server.url, worker.pid, server.pid, args)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)


def report(url: str, worker: int, redis_pid: int, args: argparse.Namespace) -> None:
    calls = args.requests
    syscalls: dict[str, dict[str, float]] = {}

    async def with_async() -> dict[str, object]:
        async with AsyncProducer.from_url(url) as producer:

            async def run(n: int) -> list[float]:
                latencies = []
                for i in range(n):
                    began = time.perf_counter()
                    await producer.call(QUEUE, i, timeout=30)
                    latencies.append(time.perf_counter() - began)
                return latencies

            await run(WARM_UP)
            sample = Sample(worker, redis_pid)
            found = sample.result(await run(calls))
            if args.strace:
                with (
                    traced(worker, calls, syscalls, "worker (asyncio producer)"),
                    traced(os.getpid(), calls, syscalls, "asyncio producer"),
                ):
                    await run(calls)
            return found

    print(f"asyncio producer: {asyncio.run(with_async())}")
    with Producer.from_url(url) as producer:

        def run(n: int) -> list[float]:
            latencies = []
            for i in range(n):
                began = time.perf_counter()
                producer.call(QUEUE, i, timeout=30)
                latencies.append(time.perf_counter() - began)
            return latencies

        run(WARM_UP)
        sample = Sample(worker, redis_pid)
        print(f"sync producer:    {sample.result(run(calls))}")
        if args.strace:
            with (
                traced(worker, calls, syscalls, "worker (sync producer)"),
                traced(os.getpid(), calls, syscalls, "sync producer"),
            ):
                run(calls)
    for who, per in syscalls.items():
        print(f"system calls per request, {who}: " + ", ".join(
            f"{name} {count:.1f}" for name, count in sorted(per.items())))  # fmt: skip


if __name__ == "__main__":
    main()
