"""Adaptive window: tunes ``max_wait_ms`` and ``max_batch_size`` online to a latency target.

Pure, like the batch former: no clock of its own, no I/O. The worker calls ``observe`` after
each batch and uses ``policy`` for the next one. "Latency" is the oldest item's queue wait
(enqueue -> batch start) plus the batch's service time. The rule:

- Service time is fitted as s(b) = a + c*b by exponentially weighted least squares; outliers
  are clipped, and the slope is shrunk toward the pessimistic s(b) ~ b until sizes have varied.
- The arrival rate is counted from the enqueue times of successive batches' oldest items: the
  earlier batch's items arrived between them. Unlike items/s served, it sees overload.
- Cap: the largest batch whose service, twice over (the oldest item may first wait for the
  batch before it), fits the target; raised, if need be, to the size that keeps the worker at
  most 80% busy at that rate (a smaller cap lets the queue grow without bound). Under overload
  that is ``base.max_batch_size``: the largest batch serves the most items/s.
- Window: 0 while running at once leaves the worker at most 80% busy (a window would only add
  latency); above that, the time to collect the batch that brings it back to 80%, as far as
  window + service fits the target. None when the queue alone fills that batch (overload).
  The worker reads ahead while a batch runs: a window shorter than the running batch is free.
- Unattainable (a single item's service exceeds the target): window 0, largest cap.
"""

from __future__ import annotations

import math
from dataclasses import replace

from redbatch.batching.policy import BatchPolicy
from redbatch.errors import ConfigError

_ALPHA_FIT = 0.1  # weight of a batch in the service fit: ~10 batches of memory, smooths noise
_ALPHA_RATE = 0.1  # weight of a batch in the rate estimate (3x after a clear change)
_PRIOR_VAR = 0.25  # pseudo-variance (items^2) of the slope's pessimistic prior
_CLIP = 3.0  # a service time further than this many mean deviations off the fit is clipped
_BUSY = 0.8  # aim for at most this busy fraction: headroom against Poisson bursts
_MAX_S = 86_400.0  # longer measurements are clamped: keeps every sum finite
_MAX_RATE = 1e9  # items/s; a burst enqueued at one instant reads as this


def _clamp_int(x: float, lo: int, hi: int) -> int:
    """x rounded down into [lo, hi]; NaN -> lo, inf -> hi."""
    if not x >= lo:
        return lo
    return hi if x >= hi else int(x)


class AdaptiveWindow:
    """Online controller of the batch knobs; see the module docstring for the rule."""

    def __init__(self, base: BatchPolicy, target_latency_ms: int) -> None:
        if not 1 <= target_latency_ms <= 600_000:
            raise ConfigError(
                f"target_latency_ms must be from 1 to 600000, got {target_latency_ms}"
            )
        self.base = base
        self.target_s = target_latency_ms / 1000.0
        self.rate = 0.0  # estimated arrival rate, items/s
        self.backlog = 0.0  # items queued behind the last batch when it started (estimate)
        self.unattainable = False
        self._moments = [0.0] * 5  # EWMA of 1, b, s, b*b, b*s (the fit's sufficient stats)
        self._fits = 0
        self._dev = 0.0  # EWMA of |service - fit|
        self._items = self._gap = 0.0  # EWMA of items per head-to-head gap, and of the gap
        self._last: tuple[float, int] | None = None  # previous batch: head enqueue time, size
        # Until something is measured: run at once, full cap (the greedy policy).
        self._policy = self._knobs(base.max_batch_size, 0)

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    def fit(self) -> tuple[float, float]:
        """(a, c) of the service model s(b) = a + c*b, in seconds; (0, 0) before any batch."""
        w, sb, ss, sbb, sbs = self._moments
        if w <= 0 or sb <= 0:
            return 0.0, 0.0
        mb, ms = sb / w, ss / w
        var = max(0.0, sbb / w - mb * mb)
        cov = sbs / w - mb * ms
        # Ridge toward s ~ b: with few distinct sizes the slope stays pessimistic, so the cap
        # is not extrapolated from noise; data outweighs the prior once sizes spread.
        c = max(0.0, (cov + _PRIOR_VAR * ms / mb) / (var + _PRIOR_VAR))
        a = ms - c * mb
        return (a, c) if a >= 0 else (0.0, ms / mb)

    def observe(self, *, size: int, queue_wait_s: float, service_s: float, now: float) -> None:
        """Learn from a batch just finished: ``now`` is taken right after it ended."""
        if not all(map(math.isfinite, (queue_wait_s, service_s, now))):
            return  # a broken measurement must not move anything
        size = min(max(1, size), self.base.max_batch_size)
        wait = min(max(0.0, queue_wait_s), _MAX_S)
        measured = min(max(0.0, service_s), _MAX_S)
        self._learn_rate(now - measured - wait, size)
        self._learn_service(size, measured)
        # Arrived since the batch's oldest item, and not in the batch: still queued.
        self.backlog = max(0.0, self.rate * wait - size)
        self._retune()

    def _learn_service(self, size: int, service: float) -> None:
        """Fold a batch into the fit, its service time clipped if it is an outlier."""
        if self._fits:
            a, c = self.fit()
            predicted = a + c * size
            band = _CLIP * self._dev + 0.1 * predicted
            # The deviation learns from the residual clipped at twice the band: one outlier
            # moves it little, a lasting change widens the band ~1.5x a batch until it fits.
            self._dev += _ALPHA_FIT * (min(abs(service - predicted), 2 * band) - self._dev)
            if self._fits >= 5:
                service = min(max(service, predicted - band), predicted + band)
        self._fits += 1
        sample = (1.0, size, service, size * size, size * service)
        self._moments = [
            m + _ALPHA_FIT * (x - m) for m, x in zip(self._moments, sample, strict=True)
        ]

    def _learn_rate(self, head: float, size: int) -> None:
        if self._last is not None:
            prev_head, prev_size = self._last
            # A long idle gap is clamped: at rates this low nothing batches anyway, and an
            # hour of silence must not take many batches to forget when a burst comes.
            gap = min(max(0.0, head - prev_head), 4 * self.target_s)
            # Items 4x off what the rate believed predicts for this gap (by chance, 2% of the
            # time or less): the load changed, so this batch weighs 3x.
            expected = gap * self.rate
            jump = max(expected, prev_size) > 4 * max(1.0, min(expected, prev_size))
            alpha = 3 * _ALPHA_RATE if jump else _ALPHA_RATE
            self._items += alpha * (prev_size - self._items)
            self._gap += alpha * (gap - self._gap)
            self.rate = min(_MAX_RATE, self._items / self._gap) if self._gap > 0 else _MAX_RATE
        self._last = (head, size)

    def _retune(self) -> None:
        a, c = self.fit()
        lam, cap_max = self.rate, self.base.max_batch_size
        # Hysteresis: a noisy s(1) around the target must not flip the knobs each batch.
        self.unattainable = a + c > self.target_s * (0.9 if self.unattainable else 1.0)
        if self.unattainable:
            self._set(cap_max, 0)
            return
        lat_cap = _clamp_int((self.target_s / 2 - a) / c, 1, cap_max) if c > 0 else cap_max
        # Serve the arrivals, and drain the backlog within one target, at most _BUSY busy:
        # b/s(b) >= demand/_BUSY  <=>  b >= demand*a / (_BUSY - demand*c).
        demand = lam + self.backlog / self.target_s
        need = demand * a / (_BUSY - demand * c) if demand * c < _BUSY else math.inf
        cap = max(lat_cap, _clamp_int(math.ceil(min(need, cap_max)), 1, cap_max))
        want = min(need, cap)
        # What arrives while the previous batch runs, running at once: b = lam*s(b).
        greedy = lam * a / (1 - lam * c) if lam * c < 1 else math.inf
        window = 0.0
        if lam > 0 and greedy < want and self.backlog < want:
            # The first item opens the window, the rest come at rate lam: (want - 1)/lam.
            # Window + service of the batch it collects (<= 1 + lam*w, <= cap) must fit.
            t = self.target_s
            fits = max((t - a - c) / (1 + c * lam), t - a - c * cap)
            window = min((want - 1) / lam, fits)
        window_ms = _clamp_int(window * 1000 + 0.5, 0, self.base.max_wait_ms)
        self._set(cap, window_ms)

    def _set(self, cap: int, window_ms: int) -> None:
        if (cap, window_ms) != (self._policy.max_batch_size, self._policy.max_wait_ms):
            self._policy = self._knobs(cap, window_ms)

    def _knobs(self, cap: int, window_ms: int) -> BatchPolicy:
        # replace() keeps every other knob of the base (cost budget, priority aging).
        preferred = tuple(n for n in self.base.preferred_batch_sizes if n <= cap)
        return replace(
            self.base, max_batch_size=cap, max_wait_ms=window_ms, preferred_batch_sizes=preferred
        )

    def status_line(self) -> str:
        """One line for the log: the knobs and why."""
        a, c = self.fit()
        p = self._policy
        line = (
            f"adaptive window: wait {p.max_wait_ms} ms, batch <= {p.max_batch_size} "
            f"(target {self.target_s * 1000:g} ms, {self.rate:.0f} items/s in, "
            f"service {a * 1000:.2f} + {c * 1000:.3f}*b ms)"
        )
        return line + (
            "; target unattainable: one item's service exceeds it" if self.unattainable else ""
        )
