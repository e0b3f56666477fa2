"""Issue 21's many-queues goal: the scheduler's cost does not grow with idle queues.

    python benchmarks/suite.py --queues 10000     # or: python benchmarks/idle_queues.py 10000

On a fresh private redis-server: creates N queues the way a producer does (three lane
streams with their group, ``SADD rb:queues``), each holding one request and served by no
worker. Measures Redis's own CPU (``INFO cpu``, used_cpu_sys + used_cpu_user) over a window
without any scheduler, then starts one ``redbatch scheduler`` process, lets it warm up, and
measures its CPU (/proc) and Redis's over the same window. Then times ``redbatch status``,
``status --json`` and ``status --all`` as a user runs them (a new process each: the times
include Python's start-up). Writes benchmarks/results/queues.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import cpu_seconds

from redbatch.embedded import EmbeddedRedis

HERE = Path(__file__).resolve().parent
WINDOW_S = 10.0
WARM_UP_S = 5.0
PIPE_QUEUES = 500


def populate(client: redis.Redis, count: int) -> None:
    """``count`` queues named q00000.., one request each in the normal lane (no worker)."""
    for first in range(0, count, PIPE_QUEUES):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(count, first + PIPE_QUEUES)):
            name = f"q{i:05d}"
            for lane in ("", ":high", ":low"):
                pipe.xgroup_create(f"rb:{{{name}}}:stream{lane}", "workers", "0", mkstream=True)
            pipe.sadd("rb:queues", name)
            pipe.xadd(f"rb:{{{name}}}:stream", {"id": f"r{i}", "ct": "json", "payload": "1"})
        pipe.execute()


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_share(client: redis.Redis, seconds: float) -> float:
    """Redis's CPU over ``seconds`` of wall time, in % of one core."""
    before, began = redis_cpu(client), time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    return 100 * (redis_cpu(client) - before) / (time.monotonic() - began)


def scheduler_share(url: str, client: redis.Redis) -> tuple[float, float]:
    """(scheduler CPU %, Redis CPU %) over the window, after the warm-up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "redbatch", "scheduler", "--redis-url", url,
         "--log-level", "WARNING"]
    )  # fmt: skip
    try:
        time.sleep(WARM_UP_S)  # start-up sweep and imports are not the steady state
        cpu_before, redis_before = cpu_seconds(proc.pid), redis_cpu(client)
        began = time.monotonic()
        time.sleep(WINDOW_S)
        elapsed = time.monotonic() - began
        own = 100 * (cpu_seconds(proc.pid) - cpu_before) / elapsed
        return own, 100 * (redis_cpu(client) - redis_before) / elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def status_seconds(url: str, *extra: str) -> tuple[float, int]:
    """Wall time of one ``redbatch status`` run and the size of what it printed."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "redbatch", "status", "--redis-url", url, *extra],
        capture_output=True,
        check=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    return time.monotonic() - began, len(done.stdout)


def measure(count: int) -> dict[str, Any]:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        populate(client, count)
        idle = redis_share(client, WINDOW_S)
        own, with_scheduler = scheduler_share(server.url, client)
        result: dict[str, Any] = {
            "queues": count,
            "window_s": WINDOW_S,
            "scheduler_cpu_pct": round(own, 2),
            "redis_cpu_pct_idle": round(idle, 2),
            "redis_cpu_pct_added": round(with_scheduler - idle, 2),
        }
        runs = (("status", ()), ("status_json", ("--json",)), ("status_all", ("--all",)))
        for label, extra in runs:
            try:
                seconds, size = status_seconds(server.url, *extra)
            except subprocess.CalledProcessError as exc:  # e.g. --all on a tree without it
                result[f"{label}_error"] = exc.stderr.decode(errors="replace").strip()[-200:]
                continue
            result[f"{label}_s"], result[f"{label}_bytes"] = round(seconds, 3), size
        client.close()
        return result


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as the Markdown table of docs/performance.md."""
    lines = [
        "| idle queues | scheduler CPU | Redis CPU added | `status` | `status --json` | "
        "`status --all` |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['queues']:,} | {r['scheduler_cpu_pct']:.1f} % | "
            f"{r['redis_cpu_pct_added']:.1f} % | {_seconds(r, 'status')} | "
            f"{_seconds(r, 'status_json')} | {_seconds(r, 'status_all')} |"
        )
    return "\n".join(lines)


def _seconds(row: dict[str, Any], label: str) -> str:
    if f"{label}_s" not in row:
        return "n/a"
    return f"{row[f'{label}_s']:.2f} s ({row[f'{label}_bytes'] / 1e6:.2f} MB)"


def main(output: Path, counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        print(f"queues: {count} idle queues", file=sys.stderr)
        rows.append(measure(count))
        print(json.dumps(rows[-1]), file=sys.stderr)
    output.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    counts = [int(n) for n in sys.argv[1:] or ["10000"]]
    print(table(main(HERE / "results" / "queues.json", counts)))
