"""End-to-end throughput of the echo handler: one producer process, one worker process.

    python benchmarks/echo_throughput.py [--requests 20000] [--rounds 3]

Starts a private redis-server, then per round measures (a) redbatch: Producer.map through a
`redbatch worker` process, and (b) the baseline: the same traffic through a hand-written
redis-py loop (benchmarks/raw_worker.py: pipelined XADD, XREADGROUP COUNT 32, RPUSH of each
payload to a reply list, XACK+XDEL; the producer BLMPOPs its replies). Prints requests/s and
the ratio redbatch/baseline; quote the ratio, not the raw number, which is machine-bound.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import redis

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis

HERE = Path(__file__).resolve().parent
CHUNK = 500


def bench_redbatch(url: str, count: int) -> float:
    namespace = f"b{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "worker", "bench", "--handler",
         "redbatch.handlers:echo", "--redis-url", url, "--namespace", namespace,
         "--log-level", "WARNING"]
    )  # fmt: skip
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.call("bench", "warm-up", timeout=30)
            payloads = [{"i": i, "text": "x" * 32} for i in range(count)]
            began = time.perf_counter()
            results = producer.map("bench", payloads, timeout=300, chunk=CHUNK)
            elapsed = time.perf_counter() - began
        assert results == payloads
        return count / elapsed
    finally:
        worker.terminate()
        worker.wait(30)


def bench_raw(url: str, count: int) -> float:
    stream, reply = f"raw:{uuid.uuid4().hex[:6]}", f"raw-reply:{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen([sys.executable, str(HERE / "raw_worker.py"), url, stream, reply])
    client = redis.Redis.from_url(url)
    try:
        client.xadd(stream, {"payload": msgpack.packb("warm-up")})
        client.blpop([reply], timeout=30)
        payloads = [msgpack.packb({"i": i, "text": "x" * 32}) for i in range(count)]
        began = time.perf_counter()
        for start in range(0, count, CHUNK):
            pipe = client.pipeline(transaction=False)
            for p in payloads[start : start + CHUNK]:
                pipe.xadd(stream, {"payload": p})
            pipe.execute()
        received = 0
        while received < count:
            _, items = client.blmpop(30, 1, reply, direction="LEFT", count=512)
            received += len(items)
        elapsed = time.perf_counter() - began
        return count / elapsed
    finally:
        client.xadd(stream, {"stop": 1})
        worker.wait(30)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours: list[float] = []
    raw: list[float] = []
    with EmbeddedRedis() as server:
        for _ in range(args.rounds):
            raw.append(bench_raw(server.url, args.requests))
            ours.append(bench_redbatch(server.url, args.requests))
    r, b = statistics.median(ours), statistics.median(raw)
    print(f"requests per round: {args.requests}, rounds: {args.rounds} (medians)")
    print(f"redbatch echo, 1 producer + 1 worker process: {r:10,.0f} requests/s")
    print(f"raw redis-py loop baseline, same traffic:    {b:10,.0f} requests/s")
    print(f"ratio redbatch / baseline: {r / b:.2f}")


if __name__ == "__main__":
    main()
