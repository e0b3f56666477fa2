"""The load: requests sent through ``AsyncProducer`` in a closed loop (a fixed number in
flight) or an open loop (arrivals on a schedule, whatever the system's pace), each one's
latency and outcome recorded.

``AsyncProducer.submit`` per request, not ``map``: ``map`` admits 500 requests per script call
and loses less throughput (on the 2-core development machine, at commit b722a4d, 13,200/s
against 8,300/s for 64 submits in flight), but it hands back only the whole list: no latency
per request, and no closed or open loop. The "bench CPU" the report shows tells when the
load generator, not the system, set the pace.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redbatch.errors import (
    PayloadError,
    QueueFull,
    RequestCancelled,
    RequestDead,
    RequestExpired,
    RequestFailed,
    ResultTimeout,
)
from redbatch.producer import AsyncProducer

OK = "ok"
LOST = "lost"  # no outcome within --timeout (+ grace): counted apart from failures
MISMATCH = "mismatch"  # an ok result that is not what the echo handler returns
# A request's outcome by the error its result raises (first match wins: RequestFailed last).
_STATUS_OF_ERROR: tuple[tuple[type[Exception], str], ...] = (
    (ResultTimeout, LOST),
    (RequestExpired, "expired"),
    (RequestCancelled, "cancelled"),
    (RequestDead, "dead"),
    (RequestFailed, "error"),
    (QueueFull, "queue_full"),
    (PayloadError, "undecodable"),
)
# How long past its deadline a request's outcome may take to arrive: the worker writes
# "expired" when the deadline passed, and that is a failure, not a loss.
RESULT_GRACE_S = 5.0
# msgpack bin headers: (header bytes, longest padding it holds).
_BIN_HEADERS = ((2, 0xFF), (3, 0xFFFF), (5, 0xFFFF_FFFF))


def payload(i: int, size: int) -> list[Any]:
    """``[i, padding]``: a msgpack payload of ``size`` bytes (from 8 bytes up; a byte less
    where the padding's length header grows)."""
    int_bytes = 1 if i < 0x80 else 2 if i <= 0xFF else 3 if i <= 0xFFFF else 5
    for header, longest in _BIN_HEADERS:
        pad = size - 1 - int_bytes - header  # 1: the array header
        if pad <= longest:
            break
    return [i, b"x" * max(0, pad)]


def arrival_offsets(count: int, rate: float, arrivals: str) -> Iterator[float]:
    """Seconds from the start at which each request is due: evenly spaced ("fixed"), or a
    Poisson process (exponential gaps, seeded: the same schedule on every run)."""
    if arrivals == "fixed":
        return (i / rate for i in range(count))
    gaps = random.Random(0)
    return itertools.accumulate((gaps.expovariate(rate) for _ in range(count - 1)), initial=0.0)


@dataclass
class Tally:
    """Outcomes and latencies; ``sampled_ids``: every ``stride``-th request that ended ok
    (stride 0: none)."""

    stride: int
    advance: Callable[[], None] = lambda: None
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    sampled_ids: list[str] = field(default_factory=list)
    in_flight: int = 0
    # perf_counter of the last outcome, or of the send that ended an idle spell: requests
    # have been in flight since then with no answer (see stalled_s).
    last_answer: float = field(default_factory=time.perf_counter)

    def sending(self) -> None:
        if not self.in_flight:
            self.last_answer = time.perf_counter()
        self.in_flight += 1

    def stalled_s(self) -> float:
        """How long requests have been waiting with none answered (0 when none wait)."""
        return time.perf_counter() - self.last_answer if self.in_flight else 0.0

    def record(self, i: int, status: str, began: float, request_id: str | None) -> None:
        self.in_flight -= 1
        self.outcomes[status] += 1
        if status != LOST:
            self.last_answer = time.perf_counter()
            self.latencies_ms.append((self.last_answer - began) * 1000)
        if status == OK and request_id is not None and self.stride and i % self.stride == 0:
            self.sampled_ids.append(request_id)
        self.advance()


def sample_stride(requests: int, sample: int) -> int:
    """Every k-th request is sampled, at most ``sample`` of them; 0: none."""
    return max(1, math.ceil(requests / sample)) if sample else 0


@dataclass(frozen=True)
class Load:
    producer: AsyncProducer
    queue: str
    payload_bytes: int
    timeout_s: float
    check: bool
    stopping: asyncio.Event  # set by a stop signal; senders check it (see closed_loop)

    async def one(self, i: int, began: float, tally: Tally) -> None:
        """Send request ``i`` and wait for its outcome; latency from ``began`` (perf_counter)."""
        sent = payload(i, self.payload_bytes)
        request_id = None
        tally.sending()
        try:
            handle = await self.producer.submit(self.queue, sent, timeout=self.timeout_s)
            request_id = handle.id
            result = await handle.result(self.timeout_s + RESULT_GRACE_S)
        except Exception as exc:
            status = next((s for kind, s in _STATUS_OF_ERROR if isinstance(exc, kind)), None)
            if status is None:
                raise  # Redis unreachable, a bug: the run stops with it
            tally.record(i, status, began, request_id)
            return
        good = not self.check or result == sent
        tally.record(i, OK if good else MISMATCH, began, request_id)

    async def closed_loop(self, numbers: range, concurrency: int, tally: Tally) -> None:
        """Keep ``concurrency`` requests in flight: each sender sends its next request when
        the last one ended. Latency from the submit."""
        shared = iter(numbers)  # senders share one iterator: a window, not a task per request

        async def sender() -> None:
            for i in shared:
                # On Python 3.11 a cancellation can be lost inside redis-py's wait_for: the
                # stop flag makes sure a stop signal ends the run anyway.
                if self.stopping.is_set():
                    raise asyncio.CancelledError
                await self.one(i, time.perf_counter(), tally)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(numbers))):
                group.create_task(sender())
        if self.stopping.is_set():  # senders that saw the flag ended as cancelled, quietly
            raise asyncio.CancelledError

    async def open_loop(self, offsets: Iterator[float], tally: Tally) -> None:
        """Send each request at its scheduled time, however many are still in flight. Latency
        from the scheduled time, not from the actual send: when bench or the producer falls
        behind, the delay counts (no coordinated omission)."""
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for i, offset in enumerate(offsets):
                if self.stopping.is_set():
                    raise asyncio.CancelledError
                due = start + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # the arrival schedule, not a synchronisation
                group.create_task(self.one(i, due, tally))
