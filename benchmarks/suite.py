"""Issue 8's performance suite: redbatch against its baselines, interleaved, medians of rounds.

    python benchmarks/suite.py                  # everything, ~6-8 min on the 2-core machine
    python benchmarks/suite.py --only echo_b256,loop_a --rounds 3    # a quick re-check
    python benchmarks/suite.py --memory         # the long memory run only (~2-3 min)
    python benchmarks/suite.py --queues 10000   # scheduler and status among idle queues (~1 min)
    python benchmarks/suite.py --servers redis7,redis8,valkey8 --only loop_a,loop_b,echo_b32
                                                # the server column (docs/servers.md)
    python benchmarks/suite_report.py           # re-render table and plot from the last JSON

Starts one private redis-server (redbatch.embedded.EmbeddedRedis) and, per round, runs every
measurement once, each as its own subprocess printing one JSON line: the baselines
(benchmarks/loop_minimal.py = loop (a), benchmarks/loop_same_work.py = loop (b) with its
COUNT-1 and sequential variants, benchmarks/rq_baseline.py = RQ SimpleWorker on DB 1) and
redbatch through `redbatch bench --json`, the command users run (plus one diagnostic,
benchmarks/map_echo.py: the same worker fed by Producer.map). The order is rotated each
round so no measurement always runs first or last (the machine's noise drifts). Between
measurements the server is flushed (FLUSHALL), so no run pays for another's result hashes,
which live an hour.

Writes benchmarks/results/suite.json (every round, the medians, the machine), then
suite_report.py renders its tables into docs/performance.md and the plot
docs/assets/batch_sweep.png.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import redis

from redbatch.embedded import EmbeddedRedis, find_redis_server
from redbatch.errors import RedbatchError
from redbatch.servers import SERVERS, SYSTEM, server_build
from redbatch.transport.capabilities import detect

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SWEEP = (1, 8, 32, 64, 128, 256)
DEFAULT_BATCH = 32
# Loop (a) keeps at most this many in flight; redbatch's closed loop gets the same.
IN_FLIGHT = 2_000
SLEEP_BATCH, SLEEP_S = 64, 0.02
# The short-batch overlap row: at 5 ms a batch, decode and finish work must hide behind it.
SLEEP_SHORT_S = 0.005
# One measurement may not take longer than this (the slowest takes ~15 s; bench itself
# counts a request lost 65 s after its send).
RUN_TIMEOUT_S = 90


@dataclass(frozen=True)
class Sizes:
    """Requests per measurement; --requests scales the throughput runs, --sequential the rest."""

    requests: int
    sequential: int
    rq_jobs: int

    def sweep(self, batch: int) -> int:
        # Small batches run slower: fewer requests keep every point at a few seconds.
        return self.requests // 10 if batch == 1 else self.requests // (3 if batch < 32 else 1)


@dataclass(frozen=True)
class Measurement:
    name: str
    argv: Callable[[str, str], list[str]]  # (redis url, namespace) -> command line
    needs_hsetex: bool = False  # runs only on servers with HSETEX (Redis 8.0+)


def script(name: str, *args: object) -> Callable[[str, str], list[str]]:
    return lambda url, _ns: [sys.executable, str(HERE / name), "--redis-url", url,
                             *map(str, args)]  # fmt: skip


def plan(bench: list[str], sizes: Sizes) -> list[Measurement]:
    """Every measurement of one round, in their first round's order."""

    def redbatch(*args: object) -> Callable[[str, str], list[str]]:
        return lambda url, ns: [*bench, "--redis-url", url, "--namespace", ns, "--workers", "1",
                                "--payload-bytes", "100", "--json", *map(str, args)]  # fmt: skip

    def rq_url(url: str, ns: str) -> list[str]:
        return script("rq_baseline.py", "--jobs", sizes.rq_jobs)(url[: -len("/0")] + "/1", ns)

    def sleep(seconds: float, batches: int) -> Callable[[str, str], list[str]]:
        return redbatch("--handler", "redbatch.handlers:sleep",
                        "--handler-option", f"seconds={seconds}", "--max-batch-size", SLEEP_BATCH,
                        "--requests", SLEEP_BATCH * batches,
                        "--concurrency", SLEEP_BATCH * 8)  # fmt: skip

    echo = ["--handler", "redbatch.handlers:echo"]
    sequential = [*echo, "--requests", sizes.sequential, "--concurrency", 1]
    measurements = [
        # Loop (a) is fast: three times the requests keep its CPU reading (10 ms ticks) exact.
        Measurement("loop_a", script("loop_minimal.py", "--requests", sizes.requests * 3)),
        Measurement("loop_b", script("loop_same_work.py", "--requests", sizes.requests)),
        Measurement("loop_b_hsetex",
                    script("loop_same_work.py", "--hsetex", "--requests", sizes.requests),
                    needs_hsetex=True),
        Measurement("rq", rq_url),
        # Diagnostic: the same worker fed by Producer.map instead of bench's per-request submit.
        Measurement("echo_map_b256", script("map_echo.py", "--requests", sizes.requests)),
        Measurement("loop_b_count1",
                    script("loop_same_work.py", "--count", 1, "--requests", sizes.requests // 10)),
        Measurement("loop_b_seq",
                    script("loop_same_work.py", "--sequential", "--requests", sizes.sequential)),
        Measurement("seq_default", redbatch(*sequential)),
        Measurement("seq_wait0", redbatch(*sequential, "--max-wait-ms", 0)),
        Measurement("sleep_b64", sleep(SLEEP_S, 100)),
        Measurement("sleep5_b64", sleep(SLEEP_SHORT_S, 300)),
    ]  # fmt: skip
    # The sweep goes between the baselines, not in one block, so drift hits both sides.
    for position, batch in enumerate(SWEEP):
        measurements.insert(
            1 + position * 2,
            Measurement(f"echo_b{batch}", redbatch(*echo, "--max-batch-size", batch,
                        "--requests", sizes.sweep(batch), "--concurrency", IN_FLIGHT)),
        )  # fmt: skip
    return measurements


class MeasurementFailed(Exception):
    """A measurement exited non-zero, timed out, or lost or failed requests."""


def run_one(measurement: Measurement, url: str, tag: str) -> dict[str, Any]:
    argv = measurement.argv(url, tag)
    # A session of its own: on a timeout the measurement's workers go too, not only itself.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise MeasurementFailed(f"timed out after {RUN_TIMEOUT_S} s\n{_tail(stderr)}") from None
    except BaseException:  # Ctrl-C: the measurement's own session does not get the SIGINT
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0 or not stdout.strip():
        raise MeasurementFailed(f"exit {proc.returncode}: {shlex.join(argv)}\n{_tail(stderr)}")
    # One JSON object: one line from the baselines, indented from `redbatch bench --json`.
    result: dict[str, Any] = json.loads(stdout)
    if result.get("failed") or result.get("lost"):
        raise MeasurementFailed(f"{result['failed']} failed, {result['lost']} lost")
    return result


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-15:])


def redis_cpu_s(client: redis.Redis) -> float:
    """Redis's CPU so far from INFO cpu (to the microsecond; /proc counts 10 ms ticks, too
    coarse for a one-at-a-time run's few µs per request)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def per_request(summary: dict[str, Any], redis_cpu: float) -> None:
    """The three CPU columns every row has, under one name each: Redis's (measured here),
    the worker's or consumer's, and the producer's (bench's own CPU: its load generator)."""
    requests = summary.get("all_requests", summary["requests"])
    summary["suite_redis_cpu_us_per_request"] = redis_cpu / requests * 1e6
    worker = summary.get("worker_cpu_us_per_request", summary.get("consumer_cpu_us_per_request"))
    summary["suite_worker_cpu_us_per_request"] = worker
    producer = summary.get("producer_cpu_us_per_request")
    if "bench_cpu_s" in summary:
        producer = summary["bench_cpu_s"] / summary["requests"] * 1e6
    summary["suite_producer_cpu_us_per_request"] = producer


class Rounds:
    """Runs the rounds on one server; keeps what was measured and what failed."""

    def __init__(self, server: EmbeddedRedis, measurements: list[Measurement]) -> None:
        self.server, self.measurements = server, measurements
        self.results: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    def run(self, number: int, rounds: int) -> None:
        """Round `number`: every measurement once, the order rotated by the round."""
        shift = number * len(self.measurements) // rounds
        order = self.measurements[shift:] + self.measurements[:shift]
        url = self.server.url
        client, this_round = redis.Redis.from_url(url), {}
        hsetex = detect(client).hsetex_fnx
        for index, measurement in enumerate(order):
            if measurement.needs_hsetex and not hsetex:
                continue
            redis_cpu = redis_cpu_s(client)
            try:
                summary = run_one(measurement, url, f"s{number}m{index}")
            except MeasurementFailed as failed:
                # One failure (e.g. a worker dying under a half-edited hot path) costs its
                # measurement in this round, not the whole run.
                self.failures.append({"round": number, "name": measurement.name,
                                      "error": str(failed)})  # fmt: skip
                print(f"  round {number + 1} {measurement.name}: FAILED {failed}", file=sys.stderr)
                client.flushall()
                continue
            # The same reading for every path, baselines included (setup and warm-up are
            # in it too: a few requests' worth).
            per_request(summary, redis_cpu_s(client) - redis_cpu)
            this_round[measurement.name] = summary
            client.flushall()
            print(f"  round {number + 1} {measurement.name:14} "
                  f"{summary['throughput_rps']:10,.0f}/s", file=sys.stderr, flush=True)  # fmt: skip
        client.close()
        self.results.append(this_round)


def machine(url: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    info = redis.Redis.from_url(url).info("server")

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpu": cpu,
        "cores": len(Path("/proc/cpuinfo").read_text().split("processor\t")) - 1,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": info["redis_version"],
        **{name: version(name) for name in ("redbatch", "redis", "hiredis", "msgpack", "rq")},
    }


def server_version(url: str) -> str:
    """``valkey 8.1.1`` (HELLO: Valkey's INFO reports a Redis compatibility version)."""
    with redis.Redis.from_url(url) as client:
        return detect(client).describe()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30_000, help="per throughput run")
    parser.add_argument("--sequential", type=int, default=1_000, help="per one-at-a-time run")
    parser.add_argument("--rq-jobs", type=int, default=1_000)
    parser.add_argument("--only", help="comma-separated measurement names (default: all)")
    parser.add_argument("--bench", default=f"{sys.executable} -m redbatch bench",
                        help="the command that runs redbatch (default: %(default)s)")  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="run the memory check instead")
    parser.add_argument(
        "--queues",
        type=int,
        metavar="N",
        help="run the many-idle-queues check instead (scheduler and Redis CPU, status time)",
    )
    parser.add_argument(
        "--servers",
        default=SYSTEM,
        help=f"comma-separated, of {','.join(SERVERS)}; each round runs every measurement "
        "on each, in rotated order (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "suite.json")
    return parser.parse_args()


def fail(message: str) -> NoReturn:
    """A setting the suite cannot run with: one line, exit 2, no traceback."""
    print(f"suite: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def chosen(measurements: list[Measurement], only: str | None) -> list[Measurement]:
    if not only:
        return measurements
    wanted, known = set(only.split(",")), [m.name for m in measurements]
    if wanted - set(known):
        fail(f"unknown --only {','.join(sorted(wanted - set(known)))}; one of {','.join(known)}")
    return [m for m in measurements if m.name in wanted]


def run_queues(count: int) -> None:
    """``--queues N``: the many-idle-queues check (benchmarks/idle_queues.py) alone."""
    if count < 1:
        fail(f"invalid --queues {count}: give a count of at least 1")
    from idle_queues import main as queues_main  # noqa: PLC0415 (imports redbatch)
    from idle_queues import table  # noqa: PLC0415

    print(table(queues_main(RESULTS / "queues.json", [count])))


def main() -> None:
    args = parse_args()
    for module in ("rq", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            fail(f"{module} is missing: python3 -m pip install -e '.[bench]'")
    servers = args.servers.split(",")
    if set(servers) - set(SERVERS):
        fail(f"unknown --servers {args.servers}; choose from {','.join(SERVERS)}")
    if SYSTEM in servers and find_redis_server() is None:
        fail("redis-server is not on PATH (apt-get install redis-server)")
    RESULTS.mkdir(exist_ok=True)
    if args.memory:
        from memory_check import main as memory_main  # noqa: PLC0415 (imports redbatch)

        memory_main(RESULTS / "memory.json")
        return
    if args.queues is not None:
        run_queues(args.queues)
        return
    sizes = Sizes(args.requests, args.sequential, args.rq_jobs)
    measurements = chosen(plan(shlex.split(args.bench), sizes), args.only)
    began = time.monotonic()
    settings = {**vars(args), "output": str(args.output), "bench": args.bench}
    with contextlib.ExitStack() as stack:
        try:
            started = {name: stack.enter_context(EmbeddedRedis(command=server_build(name).command))
                       for name in servers}  # fmt: skip
        except RedbatchError as exc:
            fail(str(exc))
        runners = {name: Rounds(server, measurements) for name, server in started.items()}
        described = machine(started[servers[0]].url)
        for number in range(args.rounds):
            # Servers in rotated order too: none always measures first or last in a round.
            shift = number % len(servers)
            for name in servers[shift:] + servers[:shift]:
                print(f"round {number + 1} on {name}", file=sys.stderr)
                runners[name].run(number, args.rounds)
            first = runners[servers[0]]
            document = {
                "machine": described, "settings": settings,
                "seconds": time.monotonic() - began,
                "rounds": first.results, "failures": first.failures,
                "servers": {name: {"version": server_version(started[name].url),
                                   "rounds": r.results, "failures": r.failures}
                            for name, r in runners.items()},
            }  # fmt: skip
            # Written after every round: an interrupted run keeps what it measured.
            args.output.write_text(json.dumps(document, indent=1))
            failed = sum(len(r.failures) for r in runners.values())
            print(f"round {number + 1}/{args.rounds}: {document['seconds']:.0f} s, "
                  f"{failed} failed so far", file=sys.stderr)  # fmt: skip
    print(f"wrote {args.output}", file=sys.stderr)
    from suite_report import render  # noqa: PLC0415 (matplotlib is slow to import)

    print(render(args.output))


if __name__ == "__main__":
    main()
