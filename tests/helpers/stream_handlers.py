"""Streaming (generator) handlers that test workers import as ``helpers.stream_handlers:NAME``.

Payloads are ``{"tag": str, "n": int}``: the item streams ``"<tag>:0"`` .. ``"<tag>:<n-1>"``,
one per step, then ends with ``Final("<tag>:done")``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from redbatch import Final


def _step(payloads: list[Any], k: int) -> list[Any]:
    out: list[Any] = []
    for p in payloads:
        if k < p["n"]:
            out.append(f"{p['tag']}:{k}")
        elif k == p["n"]:
            out.append(Final(f"{p['tag']}:done"))
        else:
            out.append(None)
    return out


def tokens(payloads: list[Any], step_s: float | str = 0.0) -> Iterator[list[Any]]:
    for k in range(max(p["n"] for p in payloads) + 1):
        if float(step_s):
            time.sleep(float(step_s))
        yield _step(payloads, k)


async def async_tokens(payloads: list[Any], step_s: float | str = 0.0) -> AsyncIterator[list[Any]]:
    for k in range(max(p["n"] for p in payloads) + 1):
        await asyncio.sleep(float(step_s))
        yield _step(payloads, k)


def gated_tokens(payloads: list[Any], gate: str = "") -> Iterator[list[Any]]:
    """``tokens``, holding before step ``pause_at`` (a payload key) while the file ``gate``
    exists: the test decides when the stream goes on (after a cancel, a kill)."""
    for k in range(max(p["n"] for p in payloads) + 1):
        if any(p.get("pause_at") == k for p in payloads):
            while os.path.exists(gate):
                time.sleep(0.01)
        yield _step(payloads, k)


def chunks_only(payloads: list[Any]) -> Iterator[list[Any]]:
    """Two steps of chunks and no Final: each item's result is the list of its chunks."""
    yield [f"{p['tag']}:a" for p in payloads]
    yield [f"{p['tag']}:b" for p in payloads]
