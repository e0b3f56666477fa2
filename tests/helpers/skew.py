"""Processes and a test process whose wall clock is off by a given number of seconds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SKEWED_CLOCK_DIR = Path(__file__).resolve().parent / "skewed_clock"


def skewed_env(skew_s: float) -> dict[str, str]:
    """Environment additions for a child whose ``time.time`` is ``skew_s`` seconds off
    (``helpers/skewed_clock/sitecustomize.py`` applies them); PYTHONPATH is merged by the
    caller's env (``start_worker(env=...)`` puts this folder first)."""
    return {"FAKE_CLOCK_SKEW_S": str(skew_s), "PYTHONPATH_PREPEND": str(SKEWED_CLOCK_DIR)}


@contextmanager
def skewed_here(skew_s: float) -> Iterator[None]:
    """This process's wall clock ``skew_s`` seconds off while the block runs."""
    real_time, real_time_ns = time.time, time.time_ns
    skew_ns = int(skew_s * 1_000_000_000)
    time.time = lambda: real_time() + skew_s  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + skew_ns  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time, time.time_ns = real_time, real_time_ns  # type: ignore[assignment]


def merged_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``base`` with ``extra``; ``PYTHONPATH_PREPEND`` goes in front of PYTHONPATH."""
    env = {**base, **extra}
    prepend = env.pop("PYTHONPATH_PREPEND", "")
    if prepend:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (prepend, env.get("PYTHONPATH")) if p)
    return env
