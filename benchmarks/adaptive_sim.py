"""The adaptive window on a simulated worker: static knobs vs --target-latency-ms, per load phase.

    python benchmarks/adaptive_sim.py [--target-ms 60] [--rates 50,300,...] [--seconds 2]

Runs tests/helpers/batch_sim.py (the real batch former and AdaptiveWindow; Poisson arrivals;
a handler taking a + c*b seconds, +-10%) over a load that rises past the worker's capacity and
falls again, three ways: the static base knobs, no window at all (max_wait_ms=0, the same cap),
and adaptive knobs within the base. Per phase it prints the offered rate, items/s completed,
p50/p99 latency (enqueue -> result) of the items enqueued in the phase, the mean batch size,
and the mean window and cap used, pooled over ``--seeds`` runs (the +-10% service jitter alone
moves one run's items/s by a few percent). No Redis: it shows the rule, not redbatch's speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.batch_sim import Model, Phase, Run, percentile, simulate
from redbatch.batching import BatchPolicy


def row(runs: list[Run], index: int, label: str) -> str:
    """One phase of one policy, pooled over the seeds' runs."""
    t0, t1 = runs[0].bounds(index)
    latencies = [x for run in runs for x in run.latencies(t0, t1)]
    ran = [b for run in runs for b in run.ran_in(t0, t1) or run.batches[-1:]]
    items_per_s = statistics.mean(run.items_per_s(t0, t1) for run in runs)
    return (
        f"{'':>9} {label:<9} {items_per_s:>8.0f} "
        f"{percentile(latencies, 50) * 1000:>7.1f} {percentile(latencies, 99) * 1000:>8.1f} "
        f"{statistics.mean(b.size for b in ran):>6.1f} "
        f"{statistics.mean(b.max_wait_ms for b in ran):>7.1f} "
        f"{statistics.mean(b.max_batch_size for b in ran):>5.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-ms", type=int, default=60)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=int, default=20)
    parser.add_argument("--a-ms", type=float, default=5.0, help="service time per batch")
    parser.add_argument("--c-ms", type=float, default=0.5, help="service time per item")
    parser.add_argument(
        "--overhead-ms", type=float, default=0.0, help="worker time per batch outside the handler"
    )
    parser.add_argument("--rates", default="50,300,700,1100,1500,2200,1100,700,300,50")
    parser.add_argument("--seconds", type=float, default=2.0, help="per phase")
    parser.add_argument("--seeds", type=int, default=5, help="runs pooled per policy")
    args = parser.parse_args()

    base = BatchPolicy(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
    no_wait = BatchPolicy(max_batch_size=args.max_batch_size, max_wait_ms=0)
    model = Model(
        base_s=args.a_ms / 1000, per_item_s=args.c_ms / 1000, overhead_s=args.overhead_ms / 1000
    )
    phases = [Phase(float(rate), args.seconds) for rate in args.rates.split(",")]
    began = time.perf_counter()
    seeds = range(1, args.seeds + 1)
    runs = {
        "static": [simulate(phases, base, model, seed=seed) for seed in seeds],
        "no-wait": [simulate(phases, no_wait, model, seed=seed) for seed in seeds],
        "adaptive": [
            simulate(phases, base, model, target_ms=args.target_ms, seed=seed) for seed in seeds
        ],
    }
    per_batch = model.base_s + model.overhead_s + model.per_item_s * args.max_batch_size
    capacity = args.max_batch_size / per_batch
    print(
        f"s(b) = {args.a_ms:g} + {args.c_ms:g}*b ms (+-10%), capacity at b={args.max_batch_size}: "
        f"{capacity:.0f} items/s; static: max_wait_ms={args.max_wait_ms} "
        f"max_batch_size={args.max_batch_size}; adaptive: --target-latency-ms {args.target_ms}"
    )
    print(
        f"{'offered/s':>9} {'knobs':<9} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'batch':>6} {'wait ms':>7} {'cap':>5}"
    )
    for i, phase in enumerate(phases):
        print(f"{phase.rate:>9.0f}")
        for label, run in runs.items():
            print(row(run, i, label))
    print(f"({time.perf_counter() - began:.1f} s to simulate)")


if __name__ == "__main__":
    main()
