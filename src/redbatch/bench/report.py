"""The numbers of a bench run: built from what was recorded, printed as a table or as the
JSON object other tools parse (schema 1: fields may be added, none renamed or removed).

JSON fields::

    schema                     1
    requests                   requests asked for (--requests)
    ok                         results received, status ok (and equal to the payload when
                               results are checked: settings.results_checked)
    failed                     results received that are not ok: error, expired, cancelled,
                               dead, queue_full (refused at submit), mismatch, undecodable
    lost                       no outcome within --timeout (+5 s): ok + failed + lost = requests
    seconds                    the measured run: first send to last outcome
    throughput_rps             ok / seconds
    latency_ms                 {p50, p90, p99, max}: submit (open loop: scheduled send) to
                               result, over every request with an outcome; null if none
    outcomes                   {status: count}, every request once (ok, lost, error, ...)
    batch_sizes                {size: count}: of a sample of ok requests (every k-th, up to
                               --sample), how many ran in a batch of that size, read from
                               their result hashes' "batch" field; request-weighted
    batch_sampled              sum of batch_sizes
    redis_cpu_s                Redis's used_cpu_sys + used_cpu_user over the run (INFO cpu):
                               every client's work on a shared server
    redis_cpu_us_per_request   redis_cpu_s / requests, microseconds
    worker_cpu_s               user + system CPU of the workers bench started over the run
                               (/proc/<pid>/stat); null with --workers 0
    worker_cpu_us_per_request  worker_cpu_s / requests, microseconds; null likewise
    bench_cpu_s                bench's own CPU over the run: near "seconds", the load
                               generator is the bottleneck
    settings                   what was run: redis (no password), embedded, namespace, queue,
                               loop (closed|open), concurrency, rate, arrivals, payload_bytes,
                               timeout_s, workers, handler, handler_options, max_batch_size,
                               max_wait_ms (null: the worker's default), results_checked
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from redbatch.bench.load import LOST, OK, Tally
from redbatch.bench.measure import Usage

SCHEMA = 1
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of sorted values: the smallest value with
    at least q of them at or below it. None when there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def per_request_us(seconds: float | None, requests: int) -> float | None:
    return None if seconds is None else round(seconds * 1e6 / requests, 1)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Report:
    requests: int
    seconds: float
    tally: Tally
    usage: Usage
    batch_sizes: Counter[int]
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        outcomes = self.tally.outcomes
        ok, lost = outcomes[OK], outcomes[LOST]
        ordered = sorted(self.tally.latencies_ms)
        return {
            "schema": SCHEMA,
            "requests": self.requests,
            "ok": ok,
            "failed": sum(outcomes.values()) - ok - lost,
            "lost": lost,
            "seconds": round(self.seconds, 6),  # short runs: ms would be too coarse
            "throughput_rps": round(ok / self.seconds, 1) if self.seconds > 0 else None,
            "latency_ms": {name: _rounded(percentile(ordered, q), 3) for name, q in PERCENTILES},
            "outcomes": dict(sorted(outcomes.items())),
            "batch_sizes": {str(size): n for size, n in sorted(self.batch_sizes.items())},
            "batch_sampled": sum(self.batch_sizes.values()),
            "redis_cpu_s": round(self.usage.redis_s, 3),
            "redis_cpu_us_per_request": per_request_us(self.usage.redis_s, self.requests),
            "worker_cpu_s": _rounded(self.usage.workers_s, 3),
            "worker_cpu_us_per_request": per_request_us(self.usage.workers_s, self.requests),
            "bench_cpu_s": round(self.usage.bench_s, 3),
            "settings": self.settings,
        }

    def render(self) -> Table:
        data = self.to_json()
        s = data["settings"]
        load = (
            f"open loop, {s['rate']:g}/s {s['arrivals']}"
            if s["loop"] == "open"
            else f"closed loop, {s['concurrency']} in flight"
        )
        workers = f"{s['workers']} workers" if s["workers"] else "running workers"
        table = Table(title=f"redbatch bench: {data['requests']} requests, {load}, {workers}")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row(
            "requests ok / failed / lost", f"{data['ok']} / {data['failed']} / {data['lost']}"
        )
        table.add_row("throughput (ok)", f"{data['throughput_rps'] or 0:,.0f} requests/s")
        latency = data["latency_ms"]
        table.add_row(
            "latency p50 / p90 / p99 / max",
            " / ".join("-" if v is None else f"{v:.1f}" for v in latency.values()) + " ms",
        )
        failures = {k: v for k, v in data["outcomes"].items() if k != OK}
        table.add_row("failures", ", ".join(f"{k} {v}" for k, v in failures.items()) or "none")
        table.add_row(
            f"batch sizes ({data['batch_sampled']} sampled requests)",
            spread(self.batch_sizes),
        )
        table.add_row("Redis CPU", _cpu(data["redis_cpu_s"], data["redis_cpu_us_per_request"]))
        table.add_row("worker CPU", _cpu(data["worker_cpu_s"], data["worker_cpu_us_per_request"]))
        table.add_row("bench CPU (the load generator)", f"{data['bench_cpu_s']:.2f} s")
        table.add_row("run", f"{data['seconds']:.2f} s")
        return table


def _cpu(seconds: float | None, per_request: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s, {per_request:.0f} µs/request"


def spread(sizes: Counter[int]) -> str:
    """Batch sizes in power-of-two ranges, as shares of the sampled requests:
    ``"1: 2%, 2-3: 5%, 16-31: 93%"``."""
    total = sum(sizes.values())
    if not total:
        return "-"
    ranges: Counter[int] = Counter()
    for size, n in sizes.items():
        ranges[size.bit_length() - 1] += n  # range k holds sizes 2**k .. 2**(k+1)-1
    parts = []
    for k, n in sorted(ranges.items()):
        low, high = 2**k, 2 ** (k + 1) - 1
        label = str(low) if low == high else f"{low}-{high}"
        share = 100 * n / total
        parts.append(f"{label}: {share:.0f}%" if share >= 0.5 else f"{label}: <1%")
    return ", ".join(parts)
