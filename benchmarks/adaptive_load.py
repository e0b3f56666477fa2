"""The adaptive window on a real worker: static knobs vs --target-latency-ms, per load phase.

    python benchmarks/adaptive_load.py [--target-ms 60] [--rates 50,300,...] [--seconds 3]

Starts a private redis-server and, per configuration, one `redbatch worker` process with the
`sleep` handler (a + c*b seconds per batch of b) and one open-loop producer in this process:
requests are submitted on a precomputed schedule of Poisson arrivals (the same schedule, same
seed, for every configuration) whose rate rises past the worker's capacity and falls again,
whether or not earlier requests have completed. Configurations: static (the base knobs), no-wait
(max_wait_ms 0, same cap), adaptive (--target-latency-ms, the base knobs as upper bounds).

Latency = the time this process sees the outcome (a poller thread watches the handles every
~0.5 ms: Handle has no completion callback) minus the time just before `submit` was called.
Per phase (requests attributed by submit time): the offered rate actually achieved, items/s
completed within the phase's wall-clock window, p50/p99 latency, the mean batch size (per
batch, from the `batch` field of the result hashes), and the p99 of the producer's lag behind
its schedule (latency is counted from the actual submit, so a late producer would hide
queueing: the lag column shows whether it did).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.producer.handle import Handle
from redbatch.protocol.keys import KeySpace

QUEUE = "load"
POLL_S = 0.0005
SCAN_AHEAD = 64  # the poller looks this many not-done handles past the oldest one waiting
DRAIN_TIMEOUT_S = 60.0


@dataclass
class Run:
    """One configuration's run: per request, its phase, times (perf_counter s) and batch."""

    label: str
    phase: list[int] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)
    submitted: list[float] = field(default_factory=list)
    done_at: list[float | None] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    worker_ms: list[int] = field(default_factory=list)  # result hash: end - enq (worker clock)
    began: float = 0.0


def schedule(rates: list[float], seconds: float, seed: int, even: bool) -> list[tuple[float, int]]:
    """(offset s, phase) of every arrival: Poisson (or evenly spaced) at each phase's rate."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, int]] = []
    for index, rate in enumerate(rates):
        t0, t = index * seconds, index * seconds
        while True:
            t += 1 / rate if even else rng.expovariate(rate)
            if t >= t0 + seconds:
                break
            arrivals.append((t, index))
    return arrivals


def poll(handles: list[Handle], done_at: list[float | None], stop: threading.Event) -> None:
    """Stamp each handle's completion time. With one worker, outcomes arrive in submit order
    (nearly): scan from the oldest waiting handle and give up after SCAN_AHEAD waiting ones."""
    head = 0
    while True:
        stopping = stop.is_set()
        now = time.perf_counter()
        n, i, waiting = len(handles), head, 0
        while i < n and waiting < SCAN_AHEAD:
            if done_at[i] is None:
                if handles[i].done():
                    done_at[i] = now
                else:
                    waiting += 1
            i += 1
        while head < n and done_at[head] is not None:
            head += 1
        if stopping:
            return
        time.sleep(POLL_S)


def worker_cmd(url: str, namespace: str, args: argparse.Namespace, wait_ms: int, target: int):
    cmd = [sys.executable, "-m", "redbatch", "worker", QUEUE,
           "--handler", "redbatch.handlers:sleep",
           "--handler-option", f"seconds={args.a_ms / 1000:g}",
           "--handler-option", f"per_item={args.c_ms / 1000:g}",
           "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(wait_ms),
           "--redis-url", url, "--namespace", namespace, "--log-level", "WARNING"]  # fmt: skip
    return cmd + (["--target-latency-ms", str(target)] if target else [])


def measure(
    url: str, label: str, cmd_of, arrivals: list[tuple[float, int]], shown: list[str]
) -> Run:
    namespace = f"a{uuid.uuid4().hex[:6]}"
    cmd = cmd_of(namespace)
    shown.append(f"{label}: " + shlex.join(["python", *cmd[1:]]))
    run = Run(label)
    worker = subprocess.Popen(cmd)
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            producer.call(QUEUE, "warm-up", timeout=60)
            handles: list[Handle] = []
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(handles, run.done_at, stop), daemon=True)
            poller.start()
            run.began = began = time.perf_counter() + 0.2
            for offset, phase in arrivals:
                due = began + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                submitted = time.perf_counter()
                handle = producer.submit(QUEUE, offset)
                # The poller reads done_at[i] for every i < len(handles): extend it first.
                run.phase.append(phase)
                run.scheduled.append(due)
                run.submitted.append(submitted)
                run.done_at.append(None)
                handles.append(handle)
            deadline = time.perf_counter() + DRAIN_TIMEOUT_S
            for handle in handles:
                handle.result(max(0.0, deadline - time.perf_counter()))
            time.sleep(10 * POLL_S)
            stop.set()
            poller.join()
            ids = [h.id for h in handles]
        run.batch, run.worker_ms = read_batches(url, namespace, ids)
    finally:
        worker.terminate()
        worker.wait(30)
    return run


def read_batches(url: str, namespace: str, ids: list[str]) -> tuple[list[int], list[int]]:
    """Each request's batch size and worker-side latency (end - enq, ms) from its result."""
    keys = KeySpace(namespace).queue(QUEUE)
    client = redis.Redis.from_url(url)
    sizes: list[int] = []
    worker_ms: list[int] = []
    try:
        for start in range(0, len(ids), 1000):
            pipe = client.pipeline(transaction=False)
            for request_id in ids[start : start + 1000]:
                pipe.hmget(keys.result(request_id), "batch", "enq", "end")
            for batch, enq, end in pipe.execute():
                sizes.append(int(batch))
                worker_ms.append(int(end) - int(enq))
    finally:
        client.close()
    return sizes, worker_ms


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def row(run: Run, index: int, seconds: float) -> list[str]:
    mine = [i for i, p in enumerate(run.phase) if p == index]
    t0 = run.began + index * seconds
    t1 = t0 + seconds
    done = sum(1 for t in run.done_at if t is not None and t0 <= t < t1)
    lat = [run.done_at[i] - run.submitted[i] for i in mine if run.done_at[i] is not None]  # type: ignore[operator]
    sent = sum(1 for t in run.submitted if t0 <= t < t1)
    # Mean per batch: each item stands for 1/size of its batch.
    batches = sum(1 / run.batch[i] for i in mine)
    lag = [run.submitted[i] - run.scheduled[i] for i in mine]
    return [
        f"{sent / seconds:.0f}",
        f"{done / seconds:.0f}",
        f"{percentile(lat, 50) * 1000:.1f}",
        f"{percentile(lat, 99) * 1000:.1f}",
        f"{len(mine) / batches:.1f}" if batches else "-",
        f"{percentile(lag, 99) * 1000:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-ms", type=int, default=60)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=int, default=20)
    parser.add_argument("--a-ms", type=float, default=5.0, help="handler time per batch")
    parser.add_argument("--c-ms", type=float, default=0.5, help="handler time per item")
    parser.add_argument("--rates", default="50,300,700,1100,1400,2000,700,300,50")
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--even", action="store_true", help="evenly spaced arrivals")
    args = parser.parse_args()

    rates = [float(r) for r in args.rates.split(",")]
    arrivals = schedule(rates, args.seconds, args.seed, args.even)
    configs = {
        "static": (args.max_wait_ms, 0),
        "no-wait": (0, 0),
        "adaptive": (args.max_wait_ms, args.target_ms),
    }
    capacity = args.max_batch_size / (args.a_ms + args.c_ms * args.max_batch_size) * 1000
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
        f"before {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"handler sleep s(b) = {args.a_ms:g} + {args.c_ms:g}*b ms; handler-bound capacity at "
        f"b={args.max_batch_size}: {capacity:.0f} items/s; {len(arrivals)} requests per "
        f"configuration, {'evenly spaced' if args.even else 'Poisson'} arrivals (seed "
        f"{args.seed}), {args.seconds:g} s per phase; one open-loop producer thread"
    )
    shown: list[str] = []
    runs: list[Run] = []
    wall = time.perf_counter()
    with EmbeddedRedis() as server:
        for label, (wait_ms, target) in configs.items():

            def cmd_of(ns: str, w: int = wait_ms, t: int = target) -> list[str]:
                return worker_cmd(server.url, ns, args, w, t)

            runs.append(measure(server.url, label, cmd_of, arrivals, shown))
    print("worker commands (redis url and namespace are per run):")
    for line in shown:
        print(f"    {line}")
    print()
    print(
        "| offered/s (target) | config | offered/s (achieved) | items/s done | p50 ms | "
        "p99 ms | mean batch | submit lag p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for index, rate in enumerate(rates):
        for run in runs:
            cells = [f"{rate:.0f}", run.label, *row(run, index, args.seconds)]
            print(f"| {' | '.join(cells)} |")
    print()
    for run in runs:
        lag = [s - d for s, d in zip(run.submitted, run.scheduled, strict=True)]
        gap = statistics.median(
            (d - s) * 1000 - w
            for d, s, w in zip(run.done_at, run.submitted, run.worker_ms, strict=True)
            if d is not None
        )
        print(
            f"{run.label}: producer lag behind schedule p50 {percentile(lag, 50) * 1000:.2f} ms, "
            f"p99 {percentile(lag, 99) * 1000:.2f} ms, max {max(lag) * 1000:.1f} ms; "
            f"latency seen here minus worker's end-enq: median {gap:.2f} ms"
        )
    print(
        f"wall time {time.perf_counter() - wall:.0f} s; load average after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
