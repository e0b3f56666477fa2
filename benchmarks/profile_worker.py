"""Where a worker's time goes: cProfile of Worker.run draining a pre-filled stream.

    python benchmarks/profile_worker.py [--requests 20000] [--top 25]

Starts a private redis-server, adds the requests (echo handler payloads) through a Producer,
runs a Worker in this process under cProfile until the last request is answered, and prints
the drain time and the functions by cumulative time. cProfile slows Python down, so read the
shares, not the absolute rate (benchmarks/suite.py measures that).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import threading
import time
import uuid

from redbatch import Producer, Worker, WorkerConfig
from redbatch.embedded import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    namespace = f"p{uuid.uuid4().hex[:6]}"
    with EmbeddedRedis() as server, Producer.from_url(server.url, namespace=namespace) as producer:
        handles = [
            producer.submit("bench", {"i": i, "text": "x" * 32}) for i in range(args.requests)
        ]
        config = WorkerConfig(
            queues=("bench",),
            handler="redbatch.handlers:echo",
            redis_url=server.url,
            namespace=namespace,
            block_ms=100,
        )
        worker = Worker(config)

        def stop_when_done() -> None:
            handles[-1].result(timeout=300)
            worker.stop()

        threading.Thread(target=stop_when_done, daemon=True).start()
        profile = cProfile.Profile()
        began = time.perf_counter()
        profile.runcall(worker.run)
        elapsed = time.perf_counter() - began
    print(f"worker drained {args.requests} requests in {elapsed:.2f} s under cProfile")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
