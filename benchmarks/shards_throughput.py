"""Throughput of one queue with 1 vs 3 shards, on one Redis node and on a local 6-node Redis
Cluster (3 primaries, 3 replicas), all on this machine: the numbers docs/scaling.md
quotes.

    python benchmarks/shards_throughput.py [--requests 20000] [--workers 3]

Each case: a fresh namespace, ``--workers`` echo worker processes (``redbatch worker``,
max batch 64), one producer process feeding ``Producer.map`` calls of 2,000 from 2 threads,
every result checked; requests/s from the first submit to the last result. Prints one JSON
line per case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers.cluster: the test suite's local cluster

from helpers.cluster import LocalCluster  # noqa: E402
from redbatch import Producer  # noqa: E402
from redbatch.embedded import EmbeddedRedis  # noqa: E402
from redbatch.ops.queue import set_shards  # noqa: E402
from redbatch.protocol.keys import KeySpace  # noqa: E402
from redbatch.transport.cluster import connect_any  # noqa: E402

QUEUE = "bench"
CALL = 2_000
THREADS = 2  # producer threads
TIMEOUT_S = 300


def _workers(url: str, namespace: str, count: int) -> list[subprocess.Popen[bytes]]:
    args = [
        sys.executable, "-m", "redbatch", "worker", QUEUE, "--handler", "redbatch.handlers:echo",
        "--redis-url", url, "--namespace", namespace, "--max-batch-size", "64",
        "--log-level", "WARNING",
    ]  # fmt: skip
    return [subprocess.Popen(args) for _ in range(count)]


def run_case(url: str, shards: int, requests: int, workers: int) -> dict[str, object]:
    namespace = f"sh{uuid.uuid4().hex[:6]}"
    client = connect_any(url)
    set_shards(client, KeySpace(namespace), QUEUE, shards)
    client.close()
    procs = _workers(url, namespace, workers)
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.map(QUEUE, range(2 * CALL), timeout=TIMEOUT_S)  # warm-up, every shard
            per_thread = requests // THREADS
            errors: list[BaseException] = []

            def feed(base: int) -> None:
                try:
                    for start in range(base, base + per_thread, CALL):
                        payloads = list(range(start, min(start + CALL, base + per_thread)))
                        assert producer.map(QUEUE, payloads, timeout=TIMEOUT_S) == payloads
                except BaseException as exc:
                    errors.append(exc)

            threads = [
                threading.Thread(target=feed, args=(i * per_thread,)) for i in range(THREADS)
            ]
            began = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - began
            if errors:
                raise errors[0]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return {
        "shards": shards,
        "requests": per_thread * THREADS,
        "workers": workers,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(per_thread * THREADS / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        for shards in (1, 3):
            row = run_case(server.url, shards, args.requests, args.workers)
            print(json.dumps({"redis": "one node", **row}), flush=True)
    cluster = LocalCluster().start()
    try:
        for shards in (1, 3):
            row = run_case(cluster.url, shards, args.requests, args.workers)
            print(json.dumps({"redis": "cluster 3+3", **row}), flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
