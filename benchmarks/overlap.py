"""What overlapping Redis I/O with the handler gains: a handler that takes t per batch.

    python benchmarks/overlap.py [--batch 64] [--seconds 0.005 0.02 0.05] [--batches 60]

Starts a private redis-server and, per handler time t, one worker process with the `sleep`
handler (t per batch, `max_batch_size` = --batch) fed by one producer (`Producer.map`, the
queue never runs dry), twice: with the worker's overlap (reads and decodes batch N+1 and
writes batch N while N runs) and without it (read, run, write, one after another). Prints
items/s for both against the ceiling --batch / t.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
import uuid

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis


def child(url: str, namespace: str, batch: int, seconds: float, overlap: bool) -> None:
    """The worker process: a Worker with or without overlap (not a CLI switch)."""
    from redbatch import Worker, WorkerConfig  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = WorkerConfig(
        queues=("overlap",), handler="redbatch.handlers:sleep", redis_url=url,
        namespace=namespace, max_batch_size=batch, max_wait_ms=2, log_level="WARNING",
        handler_options=(("seconds", str(seconds)),),
    )  # fmt: skip
    Worker(config, stop=stop, overlap=overlap).run()


def measure(url: str, batch: int, seconds: float, batches: int, overlap: bool) -> float:
    namespace = f"o{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen(
        [sys.executable, __file__, "--child", url, namespace, str(batch), str(seconds),
         "1" if overlap else "0"]
    )  # fmt: skip
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.call("overlap", "warm-up", timeout=60)
            count = batch * batches
            payloads = [f"item {i}" for i in range(count)]
            began = time.perf_counter()
            results = producer.map("overlap", payloads, timeout=600, chunk=4 * batch)
            elapsed = time.perf_counter() - began
        assert results == payloads
        return count / elapsed
    finally:
        worker.terminate()
        worker.wait(60)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        url, namespace, batch, seconds, overlap = sys.argv[2:7]
        child(url, namespace, int(batch), float(seconds), overlap == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.005, 0.02, 0.05])
    parser.add_argument("--batches", type=int, default=60, help="batches per measurement")
    args = parser.parse_args()
    print(f"sleep handler, max_batch_size {args.batch}, {args.batches} batches per run")
    print(
        "| t per batch | ceiling items/s | overlap items/s | sequential items/s | overlap/ceiling |"
    )
    print("|---|---|---|---|---|")
    with EmbeddedRedis() as server:
        for t in args.seconds:
            ceiling = args.batch / t
            seq = measure(server.url, args.batch, t, args.batches, overlap=False)
            ovl = measure(server.url, args.batch, t, args.batches, overlap=True)
            cells = [f"{t * 1000:g} ms", f"{ceiling:,.0f}", f"{ovl:,.0f}", f"{seq:,.0f}"]
            print(f"| {' | '.join(cells)} | {ovl / ceiling:.2f} |")


if __name__ == "__main__":
    main()
