"""Before/after in one run: chosen suite rows for two source trees, interleaved, one Redis.

    git worktree add /tmp/before main            # or: git archive main src | tar -x -C /tmp/before
    python3 benchmarks/suite_ab.py --rows loop_b_seq,seq_default,seq_wait0,echo_b256 \\
        --trees /tmp/before,. --rounds 3

Each round runs every row once per tree (PYTHONPATH=<tree>/src, which `redbatch bench` hands
to its workers), the order of rows and of trees reversed every other round so drift hits
both sides; the baselines (rows not run through redbatch) run once a round. Prints one line a
measurement and the medians per row and tree: throughput, p50/p99, mean batch, and the CPU
per request of worker, Redis and producer (the suite's columns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import redis
from suite import MeasurementFailed, Sizes, per_request, plan, redis_cpu_s, run_one
from suite_report import cpu, mean_batch, p50, p99, producer_cpu, redis_cpu, throughput

from redbatch.embedded import EmbeddedRedis

REDBATCH_ROWS = ("echo", "seq", "sleep")
COLUMNS = {"tp": throughput, "p50": p50, "p99": p99, "batch": mean_batch,
           "worker_us": cpu, "redis_us": redis_cpu, "producer_us": producer_cpu}  # fmt: skip


def measure(row: Any, url: str, tag: str, client: redis.Redis) -> dict[str, float] | None:
    before = redis_cpu_s(client)
    try:
        summary = run_one(row, url, tag)
    except MeasurementFailed as failed:
        print(f"  {tag}: FAILED {str(failed).splitlines()[0]}", file=sys.stderr)
        return None
    finally:
        client.flushall()
    per_request(summary, redis_cpu_s(client) - before)
    timed = "latency_ms" in summary  # loops (a) and (b) at full load report no latency
    return {k: f(summary) for k, f in COLUMNS.items() if timed or f not in (p50, p99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", required=True, help="comma-separated suite measurement names")
    parser.add_argument("--trees", required=True, help="two checkouts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000, help="per throughput run")
    parser.add_argument("--sequential", type=int, default=1_000, help="per one-at-a-time run")
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    bench = [sys.executable, "-m", "redbatch", "bench"]
    rows = {m.name: m for m in plan(bench, Sizes(args.requests, args.sequential, 1_000))}
    names = args.rows.split(",")
    results: dict[str, list[dict[str, float]]] = {}
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for number in range(args.rounds):
            flip = number % 2
            for name in names[::-1] if flip else names:
                ours = name.startswith(REDBATCH_ROWS)
                for tree in (trees[::-1] if flip else trees) if ours else trees[:1]:
                    os.environ["PYTHONPATH"] = f"{tree}/src"
                    got = measure(rows[name], server.url, f"ab{number}-{name}", client)
                    key = f"{name} @ {tree}" if ours else name
                    if got is not None:
                        results.setdefault(key, []).append(got)
                        print(f"{number + 1} {key} {got}", file=sys.stderr, flush=True)
    for key, runs in results.items():
        medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        print(f"{key} ({len(runs)} runs): {medians}")


if __name__ == "__main__":
    main()
