"""redbatch echo driven by the library's batch path, `Producer.map`: a diagnostic for the suite.

    python benchmarks/map_echo.py --redis-url URL [--requests 40000] [--max-batch-size 256]

`redbatch bench` submits request by request (AsyncProducer.submit: one admission per
request, latency per request); when its own CPU is near its run time, the load generator and
not the worker bounds the throughput. This measures the same worker (`redbatch worker`,
echo) fed by `Producer.map` calls of 2,000 requests (the in-flight bound of loop (a); map
admits 500 per script call), every result checked, so the table can tell worker speed from
producer speed. Prints one JSON line like the other baselines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

import msgpack
from benchlib import cpu_seconds, emit, make_payloads

from redbatch import Producer

IN_FLIGHT = 2_000
TIMEOUT_S = 120


def run(url: str, requests: int, batch: int) -> dict[str, object]:
    namespace = f"map{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "worker", "bench", "--handler",
         "redbatch.handlers:echo", "--redis-url", url, "--namespace", namespace,
         "--max-batch-size", str(batch), "--log-level", "WARNING"]
    )  # fmt: skip
    payloads = [msgpack.unpackb(p) for p in make_payloads(requests)]
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.call("bench", "warm-up", timeout=TIMEOUT_S)
            cpu_before, own_before = cpu_seconds(worker.pid), time.process_time()
            began = time.perf_counter()
            for start in range(0, requests, IN_FLIGHT):
                chunk = payloads[start : start + IN_FLIGHT]
                if producer.map("bench", chunk, timeout=TIMEOUT_S) != chunk:
                    raise RuntimeError(f"wrong results in requests {start}..{start + IN_FLIGHT}")
            seconds = time.perf_counter() - began
            worker_cpu = cpu_seconds(worker.pid) - cpu_before
            producer_cpu = time.process_time() - own_before
    finally:
        worker.terminate()
        worker.wait(TIMEOUT_S)
    return {
        "requests": requests,
        "seconds": seconds,
        "throughput_rps": requests / seconds,
        "worker_cpu_us_per_request": worker_cpu / requests * 1e6,
        "producer_cpu_us_per_request": producer_cpu / requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--max-batch-size", type=int, default=256)
    args = parser.parse_args()
    emit(run(args.redis_url, args.requests, args.max_batch_size))


if __name__ == "__main__":
    main()
