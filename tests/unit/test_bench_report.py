"""The bench report: percentiles, the batch-size summary and the JSON object's numbers."""

from __future__ import annotations

import json
from collections import Counter

from rich.console import Console

from redbatch.bench.load import LOST, MISMATCH, OK, Tally
from redbatch.bench.measure import Usage
from redbatch.bench.report import Report, percentile, spread
from redbatch.bench.settings import Settings

JSON_KEYS = {
    "schema", "requests", "ok", "failed", "lost", "seconds", "throughput_rps", "latency_ms",
    "outcomes", "batch_sizes", "batch_sampled", "redis_cpu_s", "redis_cpu_us_per_request",
    "worker_cpu_s", "worker_cpu_us_per_request", "bench_cpu_s", "settings",
}  # fmt: skip


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.9) == 90.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert percentile([1.0, 10.0], 0.99) == 10.0  # never interpolated: a real latency
    assert percentile([7.0], 0.01) == 7.0


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 0.5) is None


def test_spread_groups_sizes_in_powers_of_two() -> None:
    assert spread(Counter({1: 1, 2: 1, 3: 2, 16: 4, 31: 2})) == "1: 10%, 2-3: 30%, 16-31: 60%"
    assert spread(Counter()) == "-"
    assert spread(Counter({1: 1, 32: 999})) == "1: <1%, 32-63: 100%"  # never "0%" for some


def _report(tally: Tally, workers_s: float | None = 0.5) -> Report:
    settings = Settings(redis_url=None, requests=4)
    usage = Usage(redis_s=0.002, workers_s=workers_s, bench_s=0.1)
    described = settings.report_settings("redis://127.0.0.1:1/0", "bench-x")
    return Report(4, 2.0, tally, usage, Counter({8: 2, 1: 1}), described)


def _tally() -> Tally:
    tally = Tally(stride=1)
    for i, (status, ms) in enumerate([(OK, 4.0), (OK, 1.0), (MISMATCH, 3.0), (LOST, 0.0)]):
        tally.outcomes[status] += 1
        if status != LOST:
            tally.latencies_ms.append(ms)
        if status == OK:
            tally.sampled_ids.append(f"r{i}")
    return tally


def test_json_report_counts_every_request_once() -> None:
    data = _report(_tally()).to_json()
    assert set(data) == JSON_KEYS
    assert data["schema"] == 1
    assert (data["ok"], data["failed"], data["lost"]) == (2, 1, 1)
    assert data["ok"] + data["failed"] + data["lost"] == data["requests"]
    assert data["outcomes"] == {"lost": 1, "mismatch": 1, "ok": 2}
    assert data["throughput_rps"] == 1.0  # ok / seconds
    assert data["latency_ms"] == {"p50": 3.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    assert data["batch_sizes"] == {"1": 1, "8": 2} and data["batch_sampled"] == 3
    assert data["redis_cpu_us_per_request"] == 500.0  # 0.002 s / 4 requests
    assert data["worker_cpu_us_per_request"] == 125_000.0
    assert data["settings"]["loop"] == "closed"
    json.dumps(data)  # plain JSON, no Counter or float('nan')


def test_json_report_without_bench_workers_has_no_worker_cpu() -> None:
    data = _report(_tally(), workers_s=None).to_json()
    assert data["worker_cpu_s"] is None and data["worker_cpu_us_per_request"] is None


def test_table_shows_the_counts_and_percentiles() -> None:
    console = Console(width=120, record=True)
    console.print(_report(_tally()).render())
    text = console.export_text()
    assert "2 / 1 / 1" in text
    assert "3.0 / 4.0 / 4.0 / 4.0 ms" in text
    assert "lost 1, mismatch 1" in text
    assert "500 µs/request" in text


def test_a_lost_request_has_no_latency_and_is_not_sampled() -> None:
    tally = Tally(stride=1)
    tally.record(0, LOST, 0.0, "r0")
    assert tally.latencies_ms == [] and tally.sampled_ids == []
    assert tally.outcomes == Counter({LOST: 1})
