"""Whether waiting for more requests can pay: the rate at which company arrives.

Pure, like the batch former: no clock of its own, no I/O; the reader reports every read.

A window only pays if more requests arrive while it is open. A lone client that sends one
request at a time never sends another before it has its answer, so for it every millisecond
of window is pure latency (issue 21: 8x loop (b)'s one-at-a-time latency, all of it the
default 2 ms window). An arrival rate counted over every request would not see that: one at
a time at 1 ms each is 1,000 requests/s, which "predicts" two more in a 2 ms window that
never come. So only *company* is counted: requests that arrive while the worker already
holds one, or beyond the first of one read (those queued behind each other in the stream
while the worker was busy). The first request of a read that found the worker empty is not
company: it is what opens a window.

``rate_at(now)`` is company per second over recent reads that brought something, as a ratio
of exponentially weighted averages (the form of the adaptive window's rate): each such read
weighs ``_ALPHA``, about the last ten count. Empty reads (the window's polls, idle blocking
reads) update nothing, so a long window is not forgotten in a few polls; instead the silence
since the last arrival counts as one more read that brought nothing, so the rate sinks while
nothing comes and a window stops once fewer than one more request is expected
(``redbatch.batching.policy.decide``). At high load reads bring many at once and the rate is
huge: the window behaves as before.

From the worker's side a lone client one at a time and a sparse stream of independent
arrivals look the same until a window is waited: so every ``PROBE_EVERY``-th request that
opens a window alone waits it out in full, and company arriving meanwhile brings waiting
back.
"""

from __future__ import annotations

_ALPHA = 0.1  # weight of one read that brought something: about ten reads of memory
# A longer gap between reads counts as this long, so that an idle hour before a burst is
# forgotten within a few of its reads. A lone client reads as no company whatever its gaps.
_MAX_GAP_S = 0.1
_MAX_RATE = 1e9  # requests/s; reads a moment apart (a burst) read as this, never infinity
# One lone request in this many waits its window out: the cost of finding out whether
# anything would have come (1/16 of a window on average for a lone client).
PROBE_EVERY = 16


class Company:
    """The recent rate of requests that arrive while others are held (see the module doc)."""

    def __init__(self) -> None:
        self._company = 0.0  # EWMA of company per read
        self._gap = 0.0  # EWMA of seconds between reads
        self._last: float | None = None  # when the last read that brought something returned
        self._alone = 0  # reads that brought one request to an empty worker
        self._probing = False

    def rate_at(self, now: float) -> float:
        """Company per second, recently, counting the silence up to ``now``; while probing,
        as high as it goes (the window is waited out)."""
        if self._probing:
            return _MAX_RATE
        if not self._company or self._last is None:
            return 0.0
        # Not clamped like a stored gap: a long silence must end a long window.
        gap = (1 - _ALPHA) * self._gap + _ALPHA * max(0.0, now - self._last)
        return min(_MAX_RATE, (1 - _ALPHA) * self._company / gap) if gap > 0 else _MAX_RATE

    def read(self, now: float, got: int, held_before: int) -> None:
        """A read returned at ``now`` with ``got`` requests, while ``held_before`` were held
        (not counting a batch that runs: its requests are no longer held)."""
        if not got:
            return  # silence: rate_at counts it
        company = got - (0 if held_before else 1)
        if not held_before:
            self._alone = self._alone + 1 if got == 1 else 0
            self._probing = self._alone % PROBE_EVERY == 0 and got == 1
        if self._last is not None:
            gap = min(max(0.0, now - self._last), _MAX_GAP_S)
            self._company += _ALPHA * (company - self._company)
            self._gap += _ALPHA * (gap - self._gap)
        self._last = now

    def expected(self, now: float, seconds: float) -> float:
        """How many more requests the recent rate predicts within ``seconds`` of ``now``."""
        return self.rate_at(now) * max(0.0, seconds)
