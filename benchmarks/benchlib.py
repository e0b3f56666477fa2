"""Helpers shared by the benchmark scripts: payloads, latency percentiles, process CPU and RSS.

Every benchmark script prints one JSON object on stdout (the same key names as
`redbatch bench --json` where they mean the same thing), so benchmarks/suite.py can run each
as a subprocess and read one line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import msgpack

# ~100-byte msgpack payloads, as issue 8 measures.
PAYLOAD_BYTES = 100
# Clock ticks per second of /proc/<pid>/stat's utime and stime.
_TICKS = os.sysconf("SC_CLK_TCK")


def make_payloads(count: int, size: int = PAYLOAD_BYTES) -> list[bytes]:
    """`count` distinct msgpack payloads of `size` bytes each (a map {"i": n, "text": "xx.."})."""
    # The index is offset past 2**32 so msgpack packs every one at the same width (uint64),
    # which gives every payload the same size.
    head = len(msgpack.packb({"i": 2**32, "text": ""}))
    filler = "x" * max(0, size - head - 1)  # -1: a str of 32+ bytes needs one more header byte
    return [msgpack.packb({"i": 2**32 + i, "text": filler}) for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    if not samples_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples_s)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def at(percent: int) -> float:
        return (cuts[percent - 1] if cuts else ordered[0]) * 1000

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": ordered[-1] * 1000}


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line benchmarks/suite.py reads."""
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
