"""The streaming benchmark's generator (imported by the worker: ``--path benchmarks``).

Each step sleeps ``step_s`` (a model's forward pass) and yields, per item, the wall-clock
time of the yield: the producer subtracts it from the chunk's arrival.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def steps(
    payloads: list[Any], step_s: float | str = 0.02, count: int | str = 50
) -> Iterator[list[Any]]:
    began = time.time()
    for _ in range(int(count)):
        time.sleep(float(step_s))
        now = time.time()
        yield [[began, now, len(payloads)]] * len(payloads)
