"""A wrong wall clock for a test's child process: Python imports this module at start-up
when this folder is on the child's PYTHONPATH (``helpers.skew.skewed_env``), and shifts
``time.time`` and ``time.time_ns`` by ``FAKE_CLOCK_SKEW_S`` seconds, as a host whose clock
is off would. The monotonic clock is left alone (it has no epoch to be wrong about)."""

import os
import time

_skew_s = float(os.environ.get("FAKE_CLOCK_SKEW_S", "0") or 0)
if _skew_s:
    _time, _time_ns = time.time, time.time_ns
    _skew_ns = int(_skew_s * 1_000_000_000)
    time.time = lambda: _time() + _skew_s
    time.time_ns = lambda: _time_ns() + _skew_ns
