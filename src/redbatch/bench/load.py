"""The load: requests sent through ``AsyncProducer`` in a closed loop (a fixed number in
flight) or an open loop (arrivals on a schedule, whatever the system's pace), each one's
latency and outcome recorded.

The closed loop tops up in groups with ``AsyncProducer.submit_many`` (one admission per
group, a handle per request); the open loop sends each request at its time with ``submit``.
The "bench CPU" the report shows tells when the load generator, not the system, set the
pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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
from redbatch.producer.handle import AsyncHandle

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


def _status_of(exc: Exception) -> str:
    """The outcome a request's error stands for; anything else (Redis unreachable, a bug)
    is raised again: the run stops with it."""
    status = next((s for kind, s in _STATUS_OF_ERROR if isinstance(exc, kind)), None)
    if status is None:
        raise exc
    return status


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
    # Requests were lost since the last answer: the next send does not restart the clock,
    # though nothing is in flight once a whole group is lost at once.
    lost_since_answer: bool = False

    def sending(self) -> None:
        if not self.in_flight and not self.lost_since_answer:
            self.last_answer = time.perf_counter()
        self.in_flight += 1

    def stalled_s(self) -> float:
        """How long requests have been waiting with none answered (0 when none wait)."""
        return time.perf_counter() - self.last_answer if self.in_flight else 0.0

    def record(self, i: int, status: str, began: float, request_id: str | None) -> None:
        self.in_flight -= 1
        self.outcomes[status] += 1
        if status == LOST:
            self.lost_since_answer = True
        else:
            self.lost_since_answer = False
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
        tally.sending()
        try:
            handle = await self.producer.submit(self.queue, sent, timeout=self.timeout_s)
        except Exception as exc:
            tally.record(i, _status_of(exc), began, None)
            return
        await self.outcome(i, sent, handle, began, tally)

    async def outcome(
        self, i: int, sent: Any, handle: AsyncHandle, began: float, tally: Tally
    ) -> None:
        """Wait for request ``i``'s outcome and record it."""
        with contextlib.suppress(Exception):  # recorded below, from the handle
            await handle.result(self.timeout_s + RESULT_GRACE_S)
        self.record(i, sent, handle, began, tally)

    def record(self, i: int, sent: Any, handle: AsyncHandle, began: float, tally: Tally) -> None:
        """Record request ``i``'s outcome (LOST while it has none)."""
        if not handle.done():
            tally.record(i, LOST, began, handle.id)
            return
        try:
            result = handle.result_nowait()
        except Exception as exc:
            tally.record(i, _status_of(exc), began, handle.id)
            return
        good = not self.check or result == sent
        tally.record(i, OK if good else MISMATCH, began, handle.id)

    async def closed_loop(self, numbers: range, concurrency: int, tally: Tally) -> None:
        """Keep ``concurrency`` requests in flight, topped up a group at a time as they end:
        one admission per group (``AsyncProducer.submit_many``), not one per request, so the
        load generator is not what sets the pace. Latency from each request's submit."""
        group_size = max(1, concurrency // 4)
        numbers_left = iter(numbers)
        remaining = len(numbers)
        room = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            while remaining:
                # On Python 3.11 a cancellation can be lost inside redis-py's wait_for: the
                # stop flag makes sure a stop signal ends the run anyway.
                if self.stopping.is_set():
                    raise asyncio.CancelledError
                free = concurrency - tally.in_flight
                if free < min(group_size, remaining):
                    room.clear()
                    await room.wait()
                    continue
                numbers_now = list(itertools.islice(numbers_left, free))
                remaining -= len(numbers_now)
                sent = [payload(i, self.payload_bytes) for i in numbers_now]
                for _ in numbers_now:
                    tally.sending()
                began = time.perf_counter()
                try:
                    handles = await self.producer.submit_many(
                        self.queue, sent, timeout=self.timeout_s
                    )
                except Exception as exc:
                    for i in numbers_now:
                        tally.record(i, _status_of(exc), began, None)
                    continue
                followed = Group(self, tally, began, room.set)
                group.create_task(followed.wait(zip(numbers_now, sent, handles, strict=True)))
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


@dataclass
class Group:
    """The requests of one ``submit_many``, each recorded as its outcome arrives: a callback
    on its handle, not a task with a timeout of its own, which at 20,000 requests/s cost
    bench more CPU than the worker spends on them. One timeout for the group (its requests
    were sent together): what has no outcome by then is lost."""

    load: Load
    tally: Tally
    began: float
    ended_one: Callable[[], None]
    waiting: dict[int, tuple[Any, AsyncHandle]] = field(default_factory=dict)
    all_in: asyncio.Future[None] | None = None

    async def wait(self, requests: Iterable[tuple[int, Any, AsyncHandle]]) -> None:
        self.all_in = asyncio.get_running_loop().create_future()
        for i, sent, handle in requests:
            self.waiting[i] = (sent, handle)
            handle.add_done_callback(functools.partial(self._arrived, i))
        try:
            async with asyncio.timeout(self.load.timeout_s + RESULT_GRACE_S):
                await self.all_in
        except TimeoutError:
            self._give_up()
        except asyncio.CancelledError:
            self._give_up()
            raise

    def _arrived(self, i: int, handle: AsyncHandle) -> None:
        request = self.waiting.pop(i, None)
        if request is None:
            return  # counted lost already
        try:
            self.load.record(i, request[0], handle, self.began, self.tally)
        except Exception as exc:  # not a request's outcome (see _status_of): the run stops
            self._end(exc)
            return
        self.ended_one()
        if not self.waiting:
            self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self.all_in is not None and not self.all_in.done():
            if error is None:
                self.all_in.set_result(None)
            else:
                self.all_in.set_exception(error)

    def _give_up(self) -> None:
        """The requests without an outcome are lost; the producer is told nobody follows
        them. One whose outcome is in but not yet seen is left to its callback."""
        for i, (_, handle) in list(self.waiting.items()):
            if not handle.done():
                del self.waiting[i]
                handle.abandon()
                self.tally.record(i, LOST, self.began, handle.id)
        self.ended_one()
