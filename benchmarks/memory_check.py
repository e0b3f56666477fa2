"""Issue 8's memory goals: a worker's RSS does not grow with traffic; Redis gives memory back.

    python benchmarks/suite.py --memory          # or: python benchmarks/memory_check.py

On a fresh private redis-server: notes `used_memory`, starts one `redbatch worker` process
(echo, `--max-batch-size 256`, `--result-ttl 10` so results expire within the run's reach),
drives 1,000,000 requests through it from this process (`Producer.map`, 10,000 per call,
every result checked) and reads the worker's RSS from /proc after 100,000 and after
1,000,000. Then it stops the worker and the producer and waits (up to 3 min) for Redis's
`used_memory` to come back within 1 MB of where it started. Takes ~2-3 min on the 2-core
machine; writes benchmarks/results/memory.json, which suite_report.py reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis
from benchlib import rss_bytes

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis

HERE = Path(__file__).resolve().parent
EARLY, TOTAL, CHUNK = 100_000, 1_000_000, 10_000
RESULT_TTL_S = 10
SETTLE_TIMEOUT_S = 180
SETTLE_BAND = 1_000_000  # bytes: "± 1 MB"
POLL_S = 1.0


def drive(producer: Producer, first: int, last: int) -> None:
    for start in range(first, last, CHUNK):
        payloads = [{"i": i, "text": "x" * 80} for i in range(start, min(last, start + CHUNK))]
        if producer.map("mem", payloads, timeout=120) != payloads:
            raise RuntimeError(f"wrong results in requests {start}..{start + CHUNK}")


def settle(client: redis.Redis, before: int) -> tuple[int, float]:
    """Wait until used_memory is back within the band (expiry is gradual); (bytes, seconds)."""
    began = time.monotonic()
    while True:
        used = int(client.info("memory")["used_memory"])
        waited = time.monotonic() - began
        if abs(used - before) <= SETTLE_BAND or waited > SETTLE_TIMEOUT_S:
            return used, waited
        # Polling is the only way: Redis announces no "all expired" event.
        time.sleep(POLL_S)


def measure(url: str) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    redis_before = int(client.info("memory")["used_memory"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "worker", "mem", "--handler", "redbatch.handlers:echo",
         "--redis-url", url, "--max-batch-size", "256", "--result-ttl", str(RESULT_TTL_S),
         "--log-level", "WARNING"]
    )  # fmt: skip
    began = time.monotonic()
    try:
        with Producer.from_url(url) as producer:
            drive(producer, 0, EARLY)
            rss_100k = rss_bytes(worker.pid)
            print(f"100,000 requests: worker RSS {rss_100k / 2**20:.1f} MiB", file=sys.stderr)
            drive(producer, EARLY, TOTAL)
            rss_1m = rss_bytes(worker.pid)
            print(f"1,000,000 requests: worker RSS {rss_1m / 2**20:.1f} MiB", file=sys.stderr)
    finally:
        worker.terminate()
        worker.wait(60)
    seconds = time.monotonic() - began
    redis_peak = int(client.info("memory")["used_memory_peak"])
    redis_after, waited = settle(client, redis_before)
    keys_left = int(client.dbsize())
    client.close()
    return {
        "requests": TOTAL, "seconds": seconds, "throughput_rps": TOTAL / seconds,
        "rss_100k": rss_100k, "rss_1m": rss_1m, "redis_before": redis_before,
        "redis_peak": redis_peak, "redis_after": redis_after, "expire_wait_s": waited,
        "keys_left": keys_left, "result_ttl_s": RESULT_TTL_S,
    }  # fmt: skip


def main(output: Path = HERE / "results" / "memory.json") -> None:
    with EmbeddedRedis() as server:
        result = measure(server.url)
    output.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
