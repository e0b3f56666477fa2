"""Whether waiting for more requests can pay: the rate at which company arrives.

Pure, like the batch former: no clock of its own, no I/O; the reader reports every read.

A window only pays if more requests arrive while it is open. A lone client that sends one
request at a time never sends another before it has its answer, so for it every millisecond
of window is pure latency (issue 21: 8x loop (b)'s one-at-a-time latency, all of it the
default 2 ms window). An arrival rate counted over every request would not see that: one at
a time at 1 ms each is 1,000 requests/s, which "predicts" two more in a 2 ms window that
never come. So only *company* is counted: requests that arrive while the worker already
holds one, or beyond the first of one read (those queued behind each other in the stream
while the worker was busy). The first request of every read that found the worker empty
is not company: it is what opens a window.

``rate`` is company per second over recent reads, as a ratio of exponentially weighted
averages (the form of the adaptive window's rate): each read weighs ``_ALPHA``, so about
the last ten reads count. The former then waits only while ``rate`` predicts at least
``WORTH`` more requests before the window closes (``redbatch.batching.policy.decide``).
At high load reads bring many at once and the rate is huge: the window behaves as before.
"""

from __future__ import annotations

_ALPHA = 0.1  # weight of one read: about ten reads of memory
# A longer gap between reads counts as this long, so that idle blocking reads (a second
# each by default) before a burst are forgotten within a few of its reads. A lone client
# reads as no company whatever its gaps: clamping them changes nothing for it.
_MAX_GAP_S = 0.1
_MAX_RATE = 1e9  # requests/s; reads a moment apart (a burst) read as this, never infinity


class Company:
    """The recent rate of requests that arrive while others are held (see the module doc)."""

    def __init__(self) -> None:
        self._company = 0.0  # EWMA of company per read
        self._gap = 0.0  # EWMA of seconds between reads
        self._last: float | None = None  # when the last read returned

    @property
    def rate(self) -> float:
        """Company per second, recently; 0 before two reads."""
        if not self._company:
            return 0.0
        return min(_MAX_RATE, self._company / self._gap) if self._gap > 0 else _MAX_RATE

    def read(self, now: float, got: int, held_before: int) -> None:
        """A read returned at ``now`` with ``got`` requests, while ``held_before`` were held
        (not counting a batch that runs: its requests are no longer held)."""
        company = max(0, got - (0 if held_before else 1))
        if self._last is not None:
            gap = min(max(0.0, now - self._last), _MAX_GAP_S)
            self._company += _ALPHA * (company - self._company)
            self._gap += _ALPHA * (gap - self._gap)
        self._last = now

    def expected(self, seconds: float) -> float:
        """How many more requests the recent rate predicts within ``seconds``."""
        return self.rate * max(0.0, seconds)
