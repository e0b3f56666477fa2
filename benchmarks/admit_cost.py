"""Redis's CPU per admitted request: ``Producer.submit_many`` of 500 into a private Redis, no
worker; ``INFO cpu`` (user + system) before and after, and the admission script's share by
``INFO commandstats``.

    python benchmarks/admit_cost.py [--requests 60000]

Run it on two trees (``PYTHONPATH=<tree>/src``) for a before/after of admit.lua.
"""

from __future__ import annotations

import argparse
import time

import redis

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis

CHUNK = 500


def cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=60_000)
    args = parser.parse_args()
    requests = args.requests // CHUNK * CHUNK
    with EmbeddedRedis() as server, Producer.from_url(server.url, namespace="ac") as producer:
        client = redis.Redis.from_url(server.url)
        producer.submit_many("q", [{"i": 0, "t": "x" * 80}] * CHUNK, timeout=60)  # warm-up
        client.config_resetstat()
        before, began = cpu_s(client), time.perf_counter()
        for k in range(requests // CHUNK):
            producer.submit_many("q", [{"i": k, "t": "x" * 80}] * CHUNK, timeout=60)
        seconds = time.perf_counter() - began
        total = (cpu_s(client) - before) * 1e6 / requests
        stats = client.info("commandstats")
        script = stats.get("cmdstat_evalsha", {}).get("usec", 0) / requests
        xadd = stats.get("cmdstat_xadd", {}).get("usec", 0) / requests
        print(
            f"Redis CPU {total:.2f} us a request (admission script {script:.2f}, the XADD in "
            f"it {xadd:.2f}); {requests / seconds:,.0f} requests/s admitted"
        )


if __name__ == "__main__":
    main()
