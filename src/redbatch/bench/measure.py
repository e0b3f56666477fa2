"""What a bench run costs: Redis's CPU (INFO cpu), the CPU of the worker processes bench
started (/proc/<pid>/stat) and of bench itself, over the measured window only; and the sizes
of the batches a sample of requests ran in (their result hashes' ``batch`` field).
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

from redbatch.errors import ConnectionFailed
from redbatch.protocol.keys import QueueKeys

_PIPELINE_CHUNK = 500
# /proc/<pid>/stat: utime and stime are fields 14 and 15, counted after the ")" that ends
# the command name (which may itself hold spaces or parentheses).
_UTIME_AFTER_NAME = 11


@dataclass(frozen=True)
class Usage:
    """CPU seconds used during the measured window; None where it could not be read."""

    redis_s: float
    workers_s: float | None
    bench_s: float


def redis_cpu_s(client: redis.Redis) -> float:
    """used_cpu_sys + used_cpu_user of the server: every client's work, not only ours."""
    try:
        info = client.info("cpu")
    except redis.RedisError as exc:
        raise ConnectionFailed(f"cannot read INFO cpu: {exc}") from None
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def process_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds of a live process (Linux); None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[_UTIME_AFTER_NAME]) + int(fields[_UTIME_AFTER_NAME + 1])
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """``start()`` and ``stop()`` bracket the measured window (not start-up or warm-up)."""

    def __init__(self, client: redis.Redis, worker_pids: list[int]) -> None:
        self._client = client
        self._pids = worker_pids
        self._began: tuple[float, float | None, float] = (0.0, None, 0.0)

    def _now(self) -> tuple[float, float | None, float]:
        return redis_cpu_s(self._client), self._workers_cpu_s(), _own_cpu_s()

    def _workers_cpu_s(self) -> float | None:
        if not self._pids:
            return None
        each = [process_cpu_s(pid) for pid in self._pids]
        # A worker that exited mid-run took its count with it: no total rather than a wrong one.
        return None if None in each else sum(s for s in each if s is not None)

    def start(self) -> None:
        self._began = self._now()

    def stop(self) -> Usage:
        redis_s, workers_s, bench_s = self._now()
        redis0, workers0, bench0 = self._began
        workers = None if workers_s is None or workers0 is None else workers_s - workers0
        return Usage(redis_s - redis0, workers, bench_s - bench0)


def batch_sizes(client: redis.Redis, keys: QueueKeys, request_ids: list[str]) -> Counter[int]:
    """How many of ``request_ids`` ran in a batch of each size (a result without a ``batch``
    field, e.g. expired before it ran or past its TTL, is left out)."""
    sizes: Counter[int] = Counter()
    try:
        for start in range(0, len(request_ids), _PIPELINE_CHUNK):
            pipe = client.pipeline(transaction=False)
            for request_id in request_ids[start : start + _PIPELINE_CHUNK]:
                pipe.hget(keys.result(request_id), "batch")
            for raw in pipe.execute():
                if raw is not None and raw.isdigit():
                    sizes[int(raw)] += 1
    except redis.RedisError as exc:
        raise ConnectionFailed(f"cannot read the sampled results: {exc}") from None
    return sizes
