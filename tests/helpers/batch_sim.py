"""A discrete-event simulation of one worker's batching (tests/unit/test_adaptive.py and
benchmarks/adaptive_sim.py).

It runs the real batch former (``decide``) and, if given a target, the real ``AdaptiveWindow``
against a model: Poisson arrivals at a piecewise-constant rate, and a handler whose service
time is s(b) = a + c*b, jittered. The worker is modelled as src/redbatch/worker reads: with
nothing running it blocks for the first item, then reads more while the former says wait; while
a batch runs it reads ahead (at most one batch held); when the batch ends, a due batch starts
at once, else the window is waited out. Redis round trips and decoding take no time unless
``Model.overhead_s`` says so.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from redbatch.batching import BatchPolicy, Held, decide
from redbatch.batching.adaptive import AdaptiveWindow


@dataclass(frozen=True)
class Model:
    """The handler: s(b) = base_s + per_item_s * b, times a uniform factor 1 +- jitter; and
    ``overhead_s`` per batch that the worker spends outside the handler (round trips, decoding):
    the items wait for it too, but the controller is told only the handler's time."""

    base_s: float = 0.005
    per_item_s: float = 0.0005
    jitter: float = 0.1
    overhead_s: float = 0.0

    def service(self, size: int, rng: random.Random) -> float:
        scale = 1.0 + rng.uniform(-self.jitter, self.jitter)
        return (self.base_s + self.per_item_s * size) * scale


@dataclass(frozen=True)
class Phase:
    rate: float  # offered load, items/s (Poisson)
    seconds: float


@dataclass(frozen=True)
class Ran:
    start: float
    size: int
    service: float
    max_wait_ms: int  # the knobs this batch was formed with
    max_batch_size: int


@dataclass
class Run:
    phases: Sequence[Phase]
    arrivals: list[float]
    done: list[float]  # completion time of each arrival
    batches: list[Ran] = field(default_factory=list)

    def bounds(self, index: int) -> tuple[float, float]:
        start = sum(p.seconds for p in self.phases[:index])
        return start, start + self.phases[index].seconds

    def latencies(self, t0: float, t1: float) -> list[float]:
        """Enqueue -> result, of the items enqueued in [t0, t1)."""
        return [d - a for a, d in zip(self.arrivals, self.done, strict=True) if t0 <= a < t1]

    def items_per_s(self, t0: float, t1: float) -> float:
        return sum(1 for d in self.done if t0 <= d < t1) / (t1 - t0)

    def ran_in(self, t0: float, t1: float) -> list[Ran]:
        return [b for b in self.batches if t0 <= b.start < t1]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else math.nan


def poisson(phases: Sequence[Phase], rng: random.Random) -> list[float]:
    out: list[float] = []
    start = 0.0
    for phase in phases:
        t = start + rng.expovariate(phase.rate)
        while t < start + phase.seconds:
            out.append(t)
            t += rng.expovariate(phase.rate)
        start += phase.seconds
    return out


class _Worker:
    def __init__(self, arrivals: list[float], base: BatchPolicy, target_ms: int | None) -> None:
        self.arrivals = arrivals
        self.next = 0  # first arrival still in the stream
        self.held: list[Held] = []
        self.base = base
        self.control = AdaptiveWindow(base, target_ms) if target_ms is not None else None

    @property
    def policy(self) -> BatchPolicy:
        return self.control.policy if self.control else self.base

    def read(self, count: int, now: float, since: float | None = None) -> int:
        """Move up to ``count`` arrivals up to ``now`` into ``held``; read ahead (``since`` a
        batch start) each is read as it comes, otherwise at ``now``."""
        got = 0
        while got < count and self.next < len(self.arrivals) and self.arrivals[self.next] <= now:
            arrived = now if since is None else max(since, self.arrivals[self.next])
            self.held.append(Held(self.next, arrived=arrived))
            self.next += 1
            got += 1
        return got

    def wait_for_batch(self, t: float) -> tuple[tuple[Held, ...], float]:
        """Reader.next_batch: block for the first item, then wait out the window."""
        if not self.held:
            t = max(t, self.arrivals[self.next])
            self.read(self.policy.max_batch_size, t)
        while True:
            decision = decide(self.held, self.policy, t)
            if decision.batch:
                return decision.batch, t
            if self.read(max(1, self.policy.max_batch_size - len(self.held)), t):
                continue
            upcoming = self.arrivals[self.next] if self.next < len(self.arrivals) else math.inf
            t = min(t + max(decision.wait_s, 1e-9), upcoming)


def simulate(
    phases: Sequence[Phase],
    base: BatchPolicy,
    model: Model,
    *,
    target_ms: int | None = None,
    seed: int = 0,
) -> Run:
    """Static ``base`` knobs, or adaptive ones (``target_ms``) within them."""
    rng = random.Random(seed)
    arrivals = poisson(phases, rng)
    run = Run(phases, arrivals, [math.nan] * len(arrivals))
    worker = _Worker(arrivals, base, target_ms)
    t = 0.0
    while worker.held or worker.next < len(arrivals):
        batch, t = worker.wait_for_batch(t)
        while batch:  # back to back while a batch is due when the previous one ends
            worker.held = [h for h in worker.held if h not in batch]
            policy = worker.policy
            service = model.service(len(batch), rng)
            run.batches.append(
                Ran(t, len(batch), service, policy.max_wait_ms, policy.max_batch_size)
            )
            busy = service + model.overhead_s
            worker.read(policy.max_batch_size - len(worker.held), t + busy, since=t)
            keys = [cast(int, h.key) for h in batch]
            oldest = min(arrivals[k] for k in keys)
            for k in keys:
                run.done[k] = t + busy
            if worker.control:
                worker.control.observe(
                    size=len(batch), queue_wait_s=t - oldest, service_s=service, now=t + busy
                )
            t += busy
            # Reader.due_batch: top up without blocking, run what is due now.
            worker.read(worker.policy.max_batch_size - len(worker.held), t)
            batch = decide(worker.held, worker.policy, t).batch
    return run
