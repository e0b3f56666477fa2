"""Whether a window can pay: the company rate and the former's use of it (pure, no clock)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from redbatch.batching import BatchPolicy, Company, Held, decide
from redbatch.batching.company import PROBE_EVERY

DEFAULT = BatchPolicy()  # the worker's defaults: 32 per batch, a 2 ms window


def waits(company: Company, policy: BatchPolicy, arrived: float, now: float) -> bool:
    """Would the former hold a lone request that arrived at ``arrived``, at ``now``?"""
    held = [Held("a", arrived=arrived)]
    return not decide(held, policy, now, company.rate_at(now)).batch


def test_a_lone_client_one_at_a_time_waits_only_on_a_rare_probe() -> None:
    company = Company()
    now, waited = 0.0, 0
    for _ in range(10 * PROBE_EVERY):  # 2,000 requests/s, one at a time
        now += 0.0005
        company.read(now, 1, 0)
        waited += waits(company, DEFAULT, now, now)
    assert waited == 10  # one in PROBE_EVERY: the rest run at once


def test_requests_queued_behind_each_other_are_company() -> None:
    company = Company()
    now = 0.0
    for _ in range(50):  # every 1 ms a read brings 8: 7 came while another was queued
        now += 0.001
        company.read(now, 8, 0)
    assert math.isclose(company.rate_at(now), 7000, rel_tol=1e-6)
    assert waits(company, DEFAULT, now, now)
    held = [Held("a", arrived=now)]
    assert math.isclose(decide(held, DEFAULT, now, company.rate_at(now)).wait_s, 0.002)


def test_arrivals_while_holding_are_company_even_one_by_one() -> None:
    company = Company()
    now = 0.0
    for _ in range(50):  # a window is open (1 held) and requests keep trickling in
        now += 0.0005
        company.read(now, 1, 1)
    assert math.isclose(company.rate_at(now), 2000, rel_tol=1e-6)


def test_silence_wears_the_rate_down_so_a_window_stops_early() -> None:
    company = Company()
    now = 0.0
    for _ in range(20):
        now += 0.001
        company.read(now, 2, 0)  # 1,000 company/s
    opened = now
    assert waits(company, DEFAULT, opened, now)  # 2 more expected: wait
    while waits(company, DEFAULT, opened, now):
        now += 0.0005  # the reader's fill poll: nothing arrives
        company.read(now, 0, 1)
    # Run before the 2 ms window is out: once fewer than one more is expected, it goes.
    assert now - opened < DEFAULT.window_s


def test_a_long_window_is_not_forgotten_in_a_few_empty_polls() -> None:
    """A sparse stream (one every 0.5 s) into a 5 s window: the polls in between, thousands
    of them, do not erase what the arrivals showed."""
    policy = BatchPolicy(max_wait_ms=5000)
    company = Company()
    now, opened = 0.0, 0.0
    company.read(now, 1, 0)
    for _ in range(6):
        for _ in range(1000):  # 0.5 s of 0.5 ms polls that find nothing
            now += 0.0005
            company.read(now, 0, 1)
        company.read(now, 1, 1)  # one more joins the held batch
    assert waits(company, policy, opened, now)


def test_a_probe_that_finds_company_brings_waiting_back() -> None:
    company = Company()
    now = 0.0
    while True:  # a lone client until the probe
        now += 0.001
        company.read(now, 1, 0)
        if waits(company, DEFAULT, now, now):
            break
    for _ in range(10):  # during the probe's window requests arrive one by one, 3 a ms
        now += 0.0003
        company.read(now, 1, 1)
    now += 0.001
    company.read(now, 1, 0)  # the next request opens a window alone: no probe now...
    assert waits(company, DEFAULT, now, now)  # ...but the company seen says more will come


def test_an_idle_hour_is_forgotten_within_a_few_busy_reads() -> None:
    company = Company()
    company.read(0.0, 1, 0)
    now = 3600.0  # an hour of empty blocking reads: the gap counts as 0.1 s
    for _ in range(5):
        company.read(now, 32, 0)
        now += 0.001
    assert company.expected(now, DEFAULT.window_s) >= 1


def test_the_default_rate_keeps_the_window_as_before() -> None:
    held = [Held("a", arrived=0.0)]
    assert decide(held, DEFAULT, 0.0).wait_s == DEFAULT.window_s
    assert decide(held, DEFAULT, 0.0, math.inf).wait_s == DEFAULT.window_s


@given(
    reads=st.lists(
        st.tuples(st.floats(0, 2, allow_nan=False), st.integers(0, 300), st.integers(0, 64)),
        max_size=60,
    )
)
def test_the_rate_is_finite_and_never_negative(reads: list[tuple[float, int, int]]) -> None:
    company = Company()
    now = 0.0
    for gap, got, held in reads:
        now += gap
        company.read(now, got, held)
        assert 0.0 <= company.rate_at(now) < math.inf
        assert 0.0 <= company.rate_at(now + gap) < math.inf
        assert company.expected(now, -1.0) == 0.0


@given(rate=st.floats(0, 1e9, allow_nan=False), now=st.floats(0, 0.01, allow_nan=False))
def test_waiting_happens_only_while_one_more_is_expected(rate: float, now: float) -> None:
    held = [Held("a", arrived=0.0)]
    decision = decide(held, DEFAULT, now, rate)
    remaining = DEFAULT.window_s - now
    waited = not decision.batch
    assert waited == (remaining > 0 and rate * remaining >= 1.0)
    if waited:
        assert 0 < decision.wait_s <= DEFAULT.window_s
