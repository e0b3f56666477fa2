"""The batch former: which held requests form the next batch, and how long to wait if none.

Pure code: no Redis, no clock of its own (``now`` is passed in), so every rule is tested with
hypothesis over random arrivals, costs and knobs. The rules:

- Expired requests are dropped before they cost a slot.
- Requests are taken in order (higher priority first, then arrival), as a prefix: a request
  that does not fit ends the batch, nothing behind it jumps the queue.
- Priorities age: a request gains one level for every ``priority_aging_ms`` it has waited,
  so a flood of high-priority requests delays a low one by at most about
  (levels between them) x ``priority_aging_ms``, never for ever. Aging never reorders
  requests of the same priority (the older one has aged at least as much).
- A batch holds at most ``max_batch_size`` requests and at most ``max_batch_cost`` of cost
  (0 = no budget). A request whose cost alone exceeds the budget runs alone: it never starves
  and never blocks the queue behind it (seed 003: a former that returns nothing for ever).
- A batch is due when it is full (by size, or because the next request would break the
  budget), when it reaches one of ``preferred_batch_sizes`` with nothing more held, or when
  the window (``max_wait_ms`` after the oldest held request arrived) has passed, or when
  waiting cannot pay: the recent rate of arriving company (``rate``, see
  ``redbatch.batching.company``) predicts fewer than ``WORTH`` more requests before the window
  closes. Otherwise the answer is "wait this long", never negative and never longer than
  the window.
- Only held requests count against the budget: finished ones are gone from ``held``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError
from redbatch.settings import declared_as

# Wait for the window only while at least this many more requests are expected before it
# closes: one more is what makes the batch fuller; fewer, and the wait is mostly latency.
WORTH = 1.0
_ARRIVED = attrgetter("arrived")


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class Held:
    """A request a worker holds: what the policy needs to know of it."""

    key: Hashable
    arrived: float  # seconds, on the same clock as ``now``
    cost: int = 1
    deadline: float | None = None  # seconds, same clock; None = none
    priority: int = 0  # higher runs first


def _knob(name: str) -> Any:
    """A field of ``BatchPolicy`` with the default of the worker setting of that name."""
    return field(default=declared_as(WorkerConfig, name).field.default)


@dataclass(frozen=True)
class BatchPolicy:
    """The worker's batching knobs, with the defaults and bounds of its settings."""

    max_batch_size: int = _knob("max_batch_size")
    max_batch_cost: int = _knob("max_batch_cost")
    max_wait_ms: int = _knob("max_wait_ms")
    preferred_batch_sizes: tuple[int, ...] = _knob("preferred_batch_sizes")
    # One priority level gained per this much waiting (0 = strict priorities, no aging).
    priority_aging_ms: int = _knob("priority_aging_ms")

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_cost", "max_wait_ms", "priority_aging_ms"):
            declared_as(WorkerConfig, name).check(getattr(self, name))
        bad = [n for n in self.preferred_batch_sizes if not 1 <= n <= self.max_batch_size]
        if bad:
            raise ConfigError(
                f"preferred_batch_sizes must lie within 1..max_batch_size, got {bad[0]}"
            )

    @property
    def window_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def room(self, holding: int) -> int:
        """How many more requests a worker should read: what fits plus at most one batch
        ahead, so it never hoards work other workers could run."""
        return max(0, 2 * self.max_batch_size - holding)


@dataclass(frozen=True, slots=True)
class Decision:
    batch: tuple[Held, ...] = ()  # run these now (never empty when a batch is due)
    expired: tuple[Held, ...] = ()  # drop these: their deadline has passed
    wait_s: float = 0.0  # when ``batch`` is empty: wait at most this long for more


def ordered(held: Sequence[Held], now: float = 0.0, aging_ms: int = 0) -> list[Held]:
    """Higher (aged) priority first; within it, arrival order (stable for equal times)."""
    if len({h.priority for h in held}) < 2:
        # One priority: aging keeps arrival order (the older has aged at least as much),
        # so arrival alone orders, with a key that calls no Python per request.
        return sorted(held, key=_ARRIVED)
    if not aging_ms:
        return sorted(held, key=lambda h: (-h.priority, h.arrived))
    step = aging_ms / 1000.0

    def aged(h: Held) -> int:
        return h.priority + max(0, int((now - h.arrived) // step))

    return sorted(held, key=lambda h: (-aged(h), h.arrived))


def decide(
    held: Sequence[Held], policy: BatchPolicy, now: float, rate: float = math.inf
) -> Decision:
    """What to do with ``held`` at ``now``; ``rate`` is the recent rate of arriving company
    (requests per second; the default, infinity, always waits out the window)."""
    expired = tuple(h for h in held if h.deadline is not None and h.deadline <= now)
    live = ordered(
        [h for h in held if h.deadline is None or h.deadline > now], now, policy.priority_aging_ms
    )
    if not live:
        return Decision(expired=expired, wait_s=policy.window_s)
    batch, full = _prefix(live, policy)
    window_end = min(h.arrived for h in live) + policy.window_s
    preferred = len(batch) == len(live) and len(batch) in policy.preferred_batch_sizes
    if full or preferred or now >= window_end or rate * (window_end - now) < WORTH:
        return Decision(batch=tuple(batch), expired=expired)
    return Decision(expired=expired, wait_s=min(policy.window_s, max(0.0, window_end - now)))


def _prefix(live: list[Held], policy: BatchPolicy) -> tuple[list[Held], bool]:
    """The longest in-order prefix within the limits, and whether it is full (nothing more
    could join it: the size limit is reached or the next request breaks the budget)."""
    budget = policy.max_batch_cost
    first = live[0]
    if budget and first.cost > budget:
        return [first], True  # oversized: alone, at once
    batch = [first]
    cost = first.cost
    for item in live[1:]:
        if len(batch) == policy.max_batch_size:
            return batch, True
        if budget and cost + item.cost > budget:
            return batch, True
        batch.append(item)
        cost += item.cost
    full = len(batch) == policy.max_batch_size or bool(budget and cost == budget)
    return batch, full
