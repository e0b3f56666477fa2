"""Render benchmarks/suite.py's JSON: the performance table, the goals, the plot.

    python benchmarks/suite_report.py [benchmarks/results/suite.json]

Every number is a median over the rounds; every ratio is the median of the per-round ratios
(both sides measured minutes apart in the same round, which is what interleaving is for).
For the repository's own results (benchmarks/results/suite.json) it rewrites the part of
docs/performance.md between the suite-report markers and docs/assets/batch_sweep.png; for a
JSON elsewhere it writes performance.md and batch_sweep.png next to it. It prints the
markdown either way.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
PAGE = DOCS / "performance.md"
PLOT = DOCS / "assets" / "batch_sweep.png"
START, END = "<!-- suite-report:start -->", "<!-- suite-report:end -->"
SWEEP = (1, 8, 32, 64, 128, 256)
DEFAULT_WAIT_MS = 2.0  # the worker's default --max-wait-ms (docs/configuration.md)
SLEEP_CEILING = 64 / 0.02
SLEEP_SHORT_CEILING = 64 / 0.005
# The multiplication sign, spelled out: ruff flags the literal as confusable with "x".
X = "\N{MULTIPLICATION SIGN}"

Rounds = list[dict[str, Any]]
Metric = Callable[[dict[str, Any]], float]


def throughput(r: dict[str, Any]) -> float:
    return float(r["throughput_rps"])


def p50(r: dict[str, Any]) -> float:
    return float(r["latency_ms"]["p50"])


def p99(r: dict[str, Any]) -> float:
    return float(r["latency_ms"]["p99"])


def cpu(r: dict[str, Any]) -> float:
    if r.get("suite_worker_cpu_us_per_request") is not None:
        return float(r["suite_worker_cpu_us_per_request"])
    return float(r.get("worker_cpu_us_per_request", r.get("consumer_cpu_us_per_request", 0.0)))


def producer_cpu(r: dict[str, Any]) -> float:
    if r.get("suite_producer_cpu_us_per_request") is not None:
        return float(r["suite_producer_cpu_us_per_request"])
    if "bench_cpu_s" in r:  # redbatch bench's own CPU: its load generator is the producer
        return float(r["bench_cpu_s"]) / float(r["requests"]) * 1e6
    return float(r["producer_cpu_us_per_request"])


def mean_batch(r: dict[str, Any]) -> float:
    """Request-weighted mean batch size of bench's sample (its result hashes' "batch")."""
    sizes = r.get("batch_sizes") or {}
    total = sum(sizes.values())
    return sum(int(size) * count for size, count in sizes.items()) / total if total else 0.0


def redis_cpu(r: dict[str, Any]) -> float:
    return float(r["suite_redis_cpu_us_per_request"])


def median(rounds: Rounds, name: str, metric: Metric) -> float | None:
    values = [metric(r[name]) for r in rounds if name in r]
    return statistics.median(values) if values else None


def ratio(rounds: Rounds, top: str, bottom: str, metric: Metric = throughput) -> float | None:
    values = [metric(r[top]) / metric(r[bottom]) for r in rounds if top in r and bottom in r]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "—" if value is None else format(value, spec) + unit


ROWS = [  # (name, label, latency meaningful)
    ("loop_a", "(a) minimal loop: XADD pipelined by 100, COUNT 256, "
               "RPUSH + XACK + XDEL pipelined", False),
    ("loop_b", "(b) same-work loop: contract fields, result hash + PEXPIRE, "
               "reply + PEXPIRE, XACK + XDEL, one MULTI per batch", False),
    ("loop_b_hsetex", "(b) with each result by `HSETEX FNX` (Redis 8.0+: write-once, "
                      "TTL in the same command)", False),
    ("loop_b_count1", "(b) with COUNT 1 (no batching)", False),
    ("loop_b_seq", "(b) one request at a time, each waited for", True),
    ("rq", "RQ SimpleWorker, no-op jobs (latency: one at a time)", True),
    *[(f"echo_b{b}", f"**redbatch** `echo`, `--max-batch-size {b}`, 2,000 in flight", True)
      for b in SWEEP],
    ("echo_map_b256", "*diagnostic:* `echo`, `--max-batch-size 256`, fed by `Producer.map` "
                      "(2,000 per call) instead of `redbatch bench`", False),
    ("seq_default", "**redbatch** `echo`, one at a time (default `--max-wait-ms 2`)", True),
    ("seq_wait0", "**redbatch** `echo`, one at a time, `--max-wait-ms 0`", True),
    ("sleep_b64", "**redbatch** `sleep` 20 ms per batch, `--max-batch-size 64`", True),
    ("sleep5_b64", "**redbatch** `sleep` 5 ms per batch, `--max-batch-size 64` (overlap)", True),
]  # fmt: skip


# The echo paths the throughput goals are checked on: bench's, and the diagnostic one.
ECHO_PATHS = (
    ("echo_b256", "echo (bench, batch 256)"),
    ("echo_b32", "echo (bench, batch 32)"),
    ("echo_map_b256", "*diagnostic:* echo (Producer.map, batch 256)"),
)

# (goal prefix, baseline, its label, the least ratio, the paths): issue 8's goals, then issue
# 21's step toward them (twice the first pass's throughput) on both batch-256 paths.
THROUGHPUT_GOALS = (
    *(("", base, label, target, ECHO_PATHS)
      for base, label, target in (("loop_a", "(a)", 0.8), ("loop_b", "(b)", 2.0),
                                  ("rq", "RQ", 80.0))),
    *(("issue 21 step: ", base, label, target, (ECHO_PATHS[0], ECHO_PATHS[2]))
      for base, label, target in (("loop_a", "(a)", 0.45), ("loop_b", "(b)", 1.4))),
)  # fmt: skip


def table(rounds: Rounds) -> list[str]:
    lines = [
        "| path | throughput /s | p50 ms | p99 ms | CPU µs per request: "
        "worker (or consumer) | Redis | producer | batch a request ran in (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label, timed in ROWS:
        if not any(name in r for r in rounds):
            continue
        lat = [fmt(median(rounds, name, m), ".2f") if timed else "—" for m in (p50, p99)]
        cpu_us = [fmt(median(rounds, name, m), ".1f") for m in (cpu, redis_cpu, producer_cpu)]
        batch = (
            median(rounds, name, mean_batch)
            if name.startswith(("echo_b", "seq", "sleep"))
            else None
        )
        cells = [label, fmt(median(rounds, name, throughput)), *lat, *cpu_us, fmt(batch, ".1f")]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not yet**")


def at_most(value: float | None, bound: float | None) -> bool | None:
    return None if value is None or bound is None else value <= bound


def goals(rounds: Rounds, memory: dict[str, Any] | None) -> list[str]:
    """One line per goal of issue 8: target, measured, met or not."""
    lines = ["| goal | target | measured | |", "|---|---|---|---|"]

    def row(goal: str, target: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {goal} | {target} | {measured} | {verdict(ok)} |")

    for prefix, base, label, target, paths in THROUGHPUT_GOALS:
        for name, what in paths:
            got = ratio(rounds, name, base)
            ok = None if got is None else got >= target
            row(f"{prefix}{what} vs {label}", f"≥ {target:g}{X}", fmt(got, ".2f", X), ok)
    # Issue 21: with default settings a lone request must not wait out a window.
    got = ratio(rounds, "seq_default", "loop_b_seq", p50)
    row(f"one at a time, default settings (`--max-wait-ms {DEFAULT_WAIT_MS:g}`), p50 vs "
        "loop (b) sequential", f"≤ 3{X}", fmt(got, ".2f", X), at_most(got, 3.0))  # fmt: skip
    for metric in (p50, p99):
        got = ratio(rounds, "seq_wait0", "loop_b_seq", metric)
        row(f"one at a time, `--max-wait-ms 0`, {metric.__name__} vs loop (b) sequential",
            f"≤ 1.5{X}", fmt(got, ".2f", X), at_most(got, 1.5))  # fmt: skip
    for name, what in (ECHO_PATHS[0], ECHO_PATHS[2]):
        got = ratio(rounds, name, "loop_a", cpu)
        row(f"worker CPU per request, {what}, vs loop (a)'s consumer", f"≤ 1.5{X}",
            fmt(got, ".2f", X), at_most(got, 1.5))  # fmt: skip
    # Issue 21's CPU goals, per request, on both echo paths at batch 256.
    for name, what in (ECHO_PATHS[0], ECHO_PATHS[2]):
        for metric, base, label, bound in (
            (redis_cpu, "loop_b", "Redis CPU vs loop (b)'s", 1.0),
            (cpu, "loop_a", "worker CPU vs loop (a)'s consumer", 2.0),
            (producer_cpu, "loop_a", "producer CPU vs loop (a)'s producer", 1.5),
        ):
            got = ratio(rounds, name, base, metric)
            row(f"{label}, {what}", f"≤ {bound:g}{X}", fmt(got, ".2f", X), at_most(got, bound))
    for name, what, ceiling, share in (
        ("sleep_b64", "20 ms", SLEEP_CEILING, 0.95),
        ("sleep5_b64", "5 ms", SLEEP_SHORT_CEILING, 0.9),
    ):
        got = median(rounds, name, throughput)
        row(f"`sleep` {what}, batch 64", f"≥ {share:g} {X} {ceiling:,.0f}/s",
            "—" if got is None else f"{got:,.0f}/s ({got / ceiling:.2f}{X})",
            None if got is None else got >= share * ceiling)  # fmt: skip
    if memory is None:
        row("memory", f"RSS(1M) ≤ 1.1 {X} RSS(100k); Redis ± 1 MB", "run `suite.py --memory`", None)
    else:
        growth = memory["rss_1m"] / memory["rss_100k"]
        row("worker RSS after 1,000,000 vs after 100,000 requests", f"≤ 1.10{X}",
            f"{growth:.3f}{X} ({memory['rss_100k'] / 2**20:.1f} → "
            f"{memory['rss_1m'] / 2**20:.1f} MiB)",
            growth <= 1.1)  # fmt: skip
        delta = memory["redis_after"] - memory["redis_before"]
        row(
            "Redis `used_memory` once results expired",
            "start ± 1 MB",
            f"{delta / 1e6:+.2f} MB after {memory['expire_wait_s']:.0f} s",
            abs(delta) <= 1e6,
        )
    return lines


def failures(document: dict[str, Any]) -> list[str]:
    """Measurements that failed in some round (their medians are over the other rounds)."""
    failed = document.get("failures", [])
    return [
        f"Failed: {f['name']} in round {f['round'] + 1}: {f['error'].splitlines()[0]}"
        for f in failed
    ]


def plot(rounds: Rounds, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (slow to import; only the report needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    batches = [b for b in SWEEP if median(rounds, f"echo_b{b}", throughput) is not None]
    if not batches:
        return  # a run of --only rows without the sweep: nothing to plot
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, title in (
        (left, throughput, "requests/s"),
        (right, p99, "p99 latency, ms (mostly queueing: 2,000 in flight)"),
    ):
        points = [[metric(r[f"echo_b{b}"]) for r in rounds if f"echo_b{b}" in r] for b in batches]
        mids = [statistics.median(p) for p in points]
        spread = [[m - min(p) for m, p in zip(mids, points, strict=True)],
                  [max(p) - m for m, p in zip(mids, points, strict=True)]]  # fmt: skip
        axis.errorbar(
            batches,
            mids,
            yerr=spread,
            marker="o",
            capsize=3,
            label="redbatch echo, via redbatch bench",
        )
        axis.set_xscale("log", base=2)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.set_xlabel("--max-batch-size")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    for name, label, style in (("loop_a", "loop (a)", "--"), ("loop_b", "loop (b)", "-."),
                               ("rq", "RQ SimpleWorker", ":")):  # fmt: skip
        value = median(rounds, name, throughput)
        if value is not None:
            left.axhline(value, linestyle=style, color="grey", label=f"{label} {value:,.0f}/s")
    fed_by_map = median(rounds, "echo_map_b256", throughput)
    if fed_by_map is not None:
        left.plot([256], [fed_by_map], marker="*", markersize=12, linestyle="none",
                  label=f"echo fed by Producer.map {fed_by_map:,.0f}/s")  # fmt: skip
    left.set_yscale("log")
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(
        f"redbatch echo, 1 producer + 1 worker, 2,000 in flight; "
        f"medians of {len(rounds)} rounds (bars: min to max)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def server_table(document: dict[str, Any]) -> list[str]:
    """The server column: each measurement on each server of the run (``--servers``)."""
    servers: dict[str, Any] = document.get("servers") or {}
    if len(servers) < 2:
        return []
    lines = [
        f"Per server, same run ({', '.join(s['version'] for s in servers.values())}):",
        "",
        "| path | server | throughput /s | CPU µs per request: consumer or worker | Redis |",
        "|---|---|---|---|---|",
    ]
    for name, label, _ in ROWS:
        for server, run in servers.items():
            rounds = run["rounds"]
            if not any(name in r for r in rounds):
                continue
            cells = [label, server, fmt(median(rounds, name, throughput)),
                     fmt(median(rounds, name, cpu), ".1f"),
                     fmt(median(rounds, name, redis_cpu), ".1f")]  # fmt: skip
            lines.append(f"| {' | '.join(cells)} |")
    return [*lines, ""]


def render(source: Path) -> str:
    document = json.loads(source.read_text())
    rounds: Rounds = document["rounds"]
    memory_path = source.parent / "memory.json"
    memory = json.loads(memory_path.read_text()) if memory_path.exists() else None
    m = document["machine"]
    text = "\n".join([
        f"Measured {len(rounds)} rounds in {document['seconds'] / 60:.1f} min on {m['cores']} {X} "
        f"{m['cpu']}, Linux {m['kernel']}, Python {m['python']}, redis-server {m['redis_server']}, "
        f"redis-py {m['redis']} with hiredis {m['hiredis']}, rq {m['rq']}.",
        "", *table(rounds), "", *goals(rounds, memory), "", *failures(document), "",
        *server_table(document),
    ])  # fmt: skip
    if source.resolve().parent == RESULTS:
        write_section(PAGE, text)
        plot(rounds, PLOT)
    else:
        (source.parent / "performance.md").write_text(text)
        plot(rounds, source.parent / "batch_sweep.png")
    return text


def write_section(page: Path, text: str) -> None:
    """Replace what lies between the markers of ``page`` with ``text``: the rest of the page
    is written by hand and stays."""
    markdown = page.read_text(encoding="utf-8")
    if markdown.count(START) != 1 or markdown.count(END) != 1:
        raise SystemExit(f"{page}: expected one {START} and one {END}")
    head, rest = markdown.split(START, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{START}\n{text.strip()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "suite.json"))
