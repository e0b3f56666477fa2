"""Streaming overhead: chunks per second through redbatch vs the generator called directly,
and the time from a chunk's yield (in the worker) to its arrival (in the producer).

    PYTHONPATH=src python benchmarks/streaming.py [--rounds 5] [--step-ms 20] [--batch 32]

Starts a private redis-server and one `redbatch worker` running
``benchmarks/stream_steps.py:steps`` (sleep ``step-ms`` per step, one chunk per item per
step), then per round submits ``batch`` streaming requests in one admission from one
AsyncProducer (so the worker reads them as one batch, checked) and reads every chunk.

- direct: the same generator called in this process, consumed as fast as it yields:
  ``batch * steps`` chunks over its run time.
- redbatch: ``batch * steps`` chunks over the time from the generator's start (its first
  value, stamped in the chunk) to the last chunk's arrival in the producer.
- latency: per chunk, arrival (the producer's task sees it) minus the yield time stamped in
  it; same machine, same clock. p50 and p99 over every chunk of every round.

Goals (issue 16): redbatch ≥ 0.9 x direct; latency p50 ≤ 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from redbatch import AsyncProducer
from redbatch.embedded import EmbeddedRedis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_steps import steps

QUEUE = "stream_bench"


def direct(step_s: float, batch: int, count: int) -> float:
    began = time.perf_counter()
    chunks = sum(len(step) for step in steps([None] * batch, step_s, count))
    return chunks / (time.perf_counter() - began)


async def one_round(url: str, namespace: str, batch: int, count: int) -> tuple[float, list[float]]:
    async with AsyncProducer.from_url(url, namespace=namespace) as producer:
        arrivals: list[tuple[float, float]] = []  # (yield time, arrival time)
        starts: list[float] = []

        # One atomic admission: the worker reads them together, one batch.
        handles = await producer.submit_many(QUEUE, range(batch), stream=True, timeout=120)

        async def one(i: int) -> None:
            handle = handles[i]
            async for began, yielded, size in handle.stream(120):
                arrivals.append((yielded, time.time()))
                starts.append(began)
                assert size == batch, f"ran in a batch of {size}, not {batch}"
            await handle.result(120)

        await asyncio.gather(*(one(i) for i in range(batch)))
    assert len(arrivals) == batch * count
    rate = len(arrivals) / (max(a for _, a in arrivals) - min(starts))
    return rate, [(a - y) * 1000 for y, a in arrivals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    step_s = args.step_ms / 1000
    namespace = f"sb{uuid.uuid4().hex[:6]}"
    with EmbeddedRedis() as server:
        command = [
            sys.executable, "-m", "redbatch", "worker", QUEUE,
            "--path", str(Path(__file__).parent), "--handler", "stream_steps:steps",
            "--handler-option", f"step_s={step_s}", "--handler-option", f"count={args.steps}",
            "--max-batch-size", str(args.batch),
            "--redis-url", server.url, "--namespace", namespace, "--log-level", "WARNING",
        ]  # fmt: skip
        worker = subprocess.Popen(command)
        # A first round waits for the worker to come up; not counted.
        asyncio.run(one_round(server.url, namespace, args.batch, args.steps))
        rates, latencies = [], []
        try:
            for _ in range(args.rounds):
                rate, lat = asyncio.run(one_round(server.url, namespace, args.batch, args.steps))
                rates.append(rate)
                latencies += lat
        finally:
            worker.terminate()
            worker.wait(30)
    base = statistics.median(direct(step_s, args.batch, args.steps) for _ in range(3))
    through = statistics.median(rates)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    shape = f"{args.step_ms:g} ms per step, batch {args.batch}, {args.steps} steps"
    print(f"generator: {shape}, {args.rounds} rounds")
    print(f"direct      {base:8.0f} chunks/s")
    print(f"redbatch    {through:8.0f} chunks/s  ({through / base:.3f} x direct; goal >= 0.9)")
    print(f"yield -> arrival  p50 {p50:.2f} ms  p99 {p99:.2f} ms  (goal p50 <= 2 ms)")


if __name__ == "__main__":
    main()
