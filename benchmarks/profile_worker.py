"""Where a worker's time goes: cProfile of Worker.run draining a pre-filled stream, or
answering lone requests one at a time.

    python benchmarks/profile_worker.py [--requests 20000] [--batch 256] [--top 25]
    python benchmarks/profile_worker.py --lone 2000 [--max-wait-ms 0]

Starts a private redis-server, runs a Worker in this process under cProfile and prints the
run time and Redis's own time per request by command (the worker's calls), and
the functions by ``--sort`` (cumulative by default; ``tottime`` for where the
time is spent itself). Draining: the requests (echo handler payloads) are added through a
Producer first, the worker stops when the last is answered. ``--lone N``: the worker runs
in a thread while this thread sends N requests one at a time (``Producer.call``). cProfile
slows Python down, so read the shares, not the absolute rate (benchmarks/suite.py measures
that).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import threading
import time
import uuid

import redis

from redbatch import Producer, Worker, WorkerConfig
from redbatch.embedded import EmbeddedRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256, help="the worker's max_batch_size")
    parser.add_argument("--lone", type=int, default=0, help="send N requests one at a time")
    parser.add_argument("--max-wait-ms", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", help="a pstats sort key")
    args = parser.parse_args()
    namespace = f"p{uuid.uuid4().hex[:6]}"
    with EmbeddedRedis() as server, Producer.from_url(server.url, namespace=namespace) as producer:
        handles = []
        if not args.lone:
            handles = [
                producer.submit("bench", {"i": i, "text": "x" * 32}) for i in range(args.requests)
            ]
        wait = {} if args.max_wait_ms is None else {"max_wait_ms": args.max_wait_ms}
        config = WorkerConfig(
            queues=("bench",),
            handler="redbatch.handlers:echo",
            redis_url=server.url,
            namespace=namespace,
            block_ms=100,
            max_batch_size=args.batch,
            **wait,  # type: ignore[arg-type]
        )
        worker = Worker(config)
        stats = redis.Redis.from_url(server.url)
        stats.config_resetstat()  # Redis's own time per command: only the worker's calls
        profile = cProfile.Profile()
        began = time.perf_counter()
        if args.lone:
            running = threading.Thread(target=profile.runcall, args=(worker.run,))
            running.start()
            producer.call("bench", {"i": -1}, timeout=60)  # the worker is up
            began = time.perf_counter()
            for i in range(args.lone):
                producer.call("bench", {"i": i, "text": "x" * 32}, timeout=60)
            elapsed = time.perf_counter() - began
            worker.stop()
            running.join()
            count = args.lone
        else:

            def stop_when_done() -> None:
                handles[-1].result(timeout=300)
                worker.stop()

            threading.Thread(target=stop_when_done, daemon=True).start()
            profile.runcall(worker.run)
            elapsed = time.perf_counter() - began
            count = args.requests
        commands = stats.info("commandstats")
    how = "one at a time" if args.lone else "drained"
    print(f"worker answered {count} requests ({how}) in {elapsed:.2f} s under cProfile")
    print("Redis µs per request by command (the worker's calls; INFO commandstats):")
    for name, row in sorted(commands.items(), key=lambda kv: -kv[1]["usec"]):
        print(f"  {name[len('cmdstat_') :]:<14} {row['usec'] / count:6.2f}  ({row['calls']} calls)")
    pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
