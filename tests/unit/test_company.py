"""Whether a window can pay: the company rate and the former's use of it (pure, no clock)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from redbatch.batching import BatchPolicy, Company, Held, decide

DEFAULT = BatchPolicy()  # the worker's defaults: 32 per batch, a 2 ms window


def one_at_a_time(company: Company, requests: int, every_s: float) -> float:
    """A lone client: each read finds the worker empty and brings one request."""
    now = 0.0
    for _ in range(requests):
        now += every_s
        company.read(now, 1, 0)
    return now


def test_a_lone_client_one_at_a_time_is_no_company_whatever_its_pace() -> None:
    company = Company()
    now = one_at_a_time(company, 1000, 0.0005)  # 2,000 requests/s, one at a time
    assert company.rate == 0.0
    decision = decide([Held("a", arrived=now)], DEFAULT, now, company.rate)
    assert [h.key for h in decision.batch] == ["a"]  # runs now: no window waited


def test_requests_queued_behind_each_other_are_company() -> None:
    company = Company()
    now = 0.0
    for _ in range(50):  # every 1 ms a read brings 8: 7 came while another was queued
        now += 0.001
        company.read(now, 8, 0)
    assert math.isclose(company.rate, 7000, rel_tol=1e-6)
    decision = decide([Held("a", arrived=now)], DEFAULT, now, company.rate)
    assert decision.batch == ()
    assert math.isclose(decision.wait_s, DEFAULT.window_s)


def test_arrivals_while_holding_are_company_even_one_by_one() -> None:
    company = Company()
    now = 0.0
    for _ in range(50):  # a window is open (1 held) and requests keep trickling in
        now += 0.0005
        company.read(now, 1, 1)
    assert math.isclose(company.rate, 2000, rel_tol=1e-6)


def test_empty_reads_wear_the_rate_down_so_a_window_stops_early() -> None:
    company = Company()
    now = 0.0
    for _ in range(20):
        now += 0.001
        company.read(now, 2, 0)  # 1,000 company/s
    held = [Held("a", arrived=now)]
    assert decide(held, DEFAULT, now, company.rate).batch == ()  # 2 more expected: wait
    polls = 0
    while not decide(held, DEFAULT, now, company.rate).batch:
        now += 0.0005  # the reader's fill poll: nothing arrives
        company.read(now, 0, 1)
        polls += 1
    # Run before the 2 ms window is out: once fewer than one more is expected, it goes.
    assert now - held[0].arrived < DEFAULT.window_s
    assert polls >= 1


def test_an_idle_second_is_forgotten_within_a_few_busy_reads() -> None:
    company = Company()
    company.read(0.0, 0, 0)
    company.read(3600.0, 0, 0)  # an hour of blocking reads: clamped to 0.1 s
    now = 3600.0
    for _ in range(5):
        now += 0.001
        company.read(now, 32, 0)
    assert company.expected(DEFAULT.window_s) >= 1


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
        assert 0.0 <= company.rate < math.inf
        assert company.expected(-1.0) == 0.0


@given(rate=st.floats(0, 1e9, allow_nan=False), now=st.floats(0, 0.01, allow_nan=False))
def test_waiting_happens_only_while_one_more_is_expected(rate: float, now: float) -> None:
    held = [Held("a", arrived=0.0)]
    decision = decide(held, DEFAULT, now, rate)
    remaining = DEFAULT.window_s - now
    waits = not decision.batch
    assert waits == (remaining > 0 and rate * remaining >= 1.0)
    if waits:
        assert 0 < decision.wait_s <= DEFAULT.window_s
