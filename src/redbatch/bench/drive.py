"""The asyncio side of a bench run: a warm-up, then the measured load between the meter's
start and stop, under a watchdog that ends the run when bench's workers die or nothing
answers, and stop signals that cancel it from the event loop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from redbatch.bench.load import (
    LOST,
    OK,
    RESULT_GRACE_S,
    Load,
    Tally,
    arrival_offsets,
    sample_stride,
)
from redbatch.bench.measure import Meter, Usage
from redbatch.bench.settings import Settings
from redbatch.errors import RedbatchError
from redbatch.producer import AsyncProducer

WARM_UP_REQUESTS = 128  # opens the producer's connections and warms the workers' caches
_WATCH_PERIOD_S = 1.0


@dataclass(frozen=True)
class Target:
    url: str
    queue: str
    # Raises RedbatchError when a worker bench started has exited.
    check_workers: Callable[[], None]


def on_stop_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so everything started unwinds in order —
    even when this process was started with SIGINT ignored (a background job of a
    non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


def drive(
    settings: Settings, target: Target, meter: Meter, console: Console
) -> tuple[Tally, float, Usage]:
    """The measured run: its tally, its seconds and what it cost."""
    try:
        return asyncio.run(_load(settings, target, meter, console))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # a stop signal cancelled the run
    except BaseExceptionGroup as group:  # from a TaskGroup: the first failure says it
        raise _first(group) from None
    finally:
        # Closing the loop resets SIGTERM to its default, which would kill us without
        # stopping the workers: the command's handlers again.
        on_stop_signals()


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _load(
    settings: Settings, target: Target, meter: Meter, console: Console
) -> tuple[Tally, float, Usage]:
    stopping = _cancel_on_stop_signals()
    async with AsyncProducer.from_url(target.url, namespace=settings.namespace) as producer:
        await producer.ping()
        load = Load(
            producer, target.queue, settings.payload_bytes, settings.timeout_s,
            settings.checks_results, stopping,
        )  # fmt: skip
        warm_up = Tally(stride=1)
        warming = load.closed_loop(range(WARM_UP_REQUESTS), settings.concurrency, warm_up)
        await _watched(warming, warm_up, target, load)
        columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        hidden = settings.as_json or not console.is_terminal
        with Progress(*columns, console=console, transient=True, disable=hidden) as progress:
            task = progress.add_task("requests", total=settings.requests)
            tally = Tally(sample_stride(settings.requests, settings.sample))
            if not hidden:  # a hidden bar still takes a lock per advance
                tally.advance = lambda: progress.advance(task)
            if settings.rate is None:
                work = load.closed_loop(range(settings.requests), settings.concurrency, tally)
            else:
                offsets = arrival_offsets(settings.requests, settings.rate, settings.arrivals)
                work = load.open_loop(offsets, tally)
            meter.start()
            began = time.perf_counter()
            await _watched(work, tally, target, load)
            seconds = time.perf_counter() - began
            usage = meter.stop()
    return tally, seconds, usage


def _cancel_on_stop_signals() -> asyncio.Event:
    """A stop signal cancels the running coroutine from the event loop (never an exception
    injected at a random point, which a finaliser could swallow). The event it sets is for
    the senders: on Python 3.11 a cancellation can be lost inside redis-py's wait_for."""
    main = asyncio.current_task()
    assert main is not None
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    return stopping


async def _watched(
    work: Coroutine[Any, Any, None], tally: Tally, target: Target, load: Load
) -> None:
    """``work``, ended with an error as soon as a worker bench started exits, or when
    requests wait a whole request timeout and none is answered (all of them will be lost:
    waiting for every one would take hours)."""
    limit_s = load.timeout_s + RESULT_GRACE_S + _WATCH_PERIOD_S

    async def watch() -> None:
        try:
            await _watch(tally, target, limit_s)
        except RedbatchError:
            # The task group cancels ``work``, but on 3.11 redis-py can swallow that
            # cancellation in a sender, which would then carry on: it checks this flag.
            load.stopping.set()
            raise

    async with asyncio.TaskGroup() as group:
        watchdog = group.create_task(watch())
        try:
            await work
        finally:
            watchdog.cancel()


async def _watch(tally: Tally, target: Target, limit_s: float) -> None:
    while True:
        await asyncio.sleep(_WATCH_PERIOD_S)  # a watchdog's period
        target.check_workers()
        if tally.stalled_s() > limit_s:
            ok, lost = tally.outcomes[OK], tally.outcomes[LOST]
            raise RedbatchError(
                f"no request answered for {limit_s:g} s while {tally.in_flight} waited "
                f"({ok} ok, {lost} lost so far): is anything serving queue {target.queue}?"
            )
