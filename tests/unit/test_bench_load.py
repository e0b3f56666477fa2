"""The load's pure parts: payload sizes, arrival schedules, sampling, bench's settings."""

from __future__ import annotations

import itertools
import statistics
import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from redbatch.bench.load import LOST, OK, Tally, arrival_offsets, payload, sample_stride
from redbatch.bench.settings import Settings
from redbatch.errors import ConfigError


@given(st.integers(0, 2**31), st.integers(8, 200_000))
def test_payload_is_about_the_asked_size(i: int, size: int) -> None:
    packed = msgpack.packb(payload(i, size))
    assert size - 2 <= len(packed) <= size
    assert msgpack.unpackb(packed)[0] == i


def test_payload_smaller_than_its_envelope_is_just_the_envelope() -> None:
    assert payload(5, 0) == [5, b""]


def test_fixed_arrivals_are_evenly_spaced() -> None:
    assert list(arrival_offsets(4, 2.0, "fixed")) == [0.0, 0.5, 1.0, 1.5]


def test_poisson_arrivals_are_seeded_and_average_one_over_the_rate() -> None:
    first = list(arrival_offsets(5000, 100.0, "poisson"))
    assert first == list(arrival_offsets(5000, 100.0, "poisson"))  # the same every run
    assert first[0] == 0.0 and first == sorted(first)
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert statistics.mean(gaps) == pytest.approx(0.01, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.01, rel=0.1)  # exponential: sd = mean


def test_sample_stride_takes_at_most_the_sample() -> None:
    assert sample_stride(300, 1000) == 1
    assert sample_stride(300, 100) == 3
    assert sample_stride(1001, 1000) == 2
    assert len(range(0, 1001, sample_stride(1001, 1000))) <= 1000
    assert sample_stride(10, 0) == 0


def test_sample_0_samples_nothing() -> None:
    tally = Tally(stride=sample_stride(10, 0))
    for i in range(10):
        tally.record(i, OK, time.perf_counter(), f"r{i}")
    assert tally.sampled_ids == [] and tally.outcomes[OK] == 10


def test_tally_samples_every_kth_ok_request() -> None:
    tally = Tally(stride=3)
    began = time.perf_counter()
    for i in range(7):
        tally.record(i, OK, began, f"r{i}")
    assert tally.sampled_ids == ["r0", "r3", "r6"]
    assert len(tally.latencies_ms) == 7 and min(tally.latencies_ms) >= 0


def test_a_group_lost_at_once_does_not_restart_the_stall_clock() -> None:
    """bench records a submitted group's unanswered requests lost together, which empties
    the window: the refill must not count as the end of an idle spell, or a run that nobody
    answers is never called stalled."""
    tally = Tally(stride=0)
    tally.sending()
    tally.last_answer -= 10  # sent 10 s ago, unanswered
    tally.record(0, LOST, tally.last_answer, None)
    tally.sending()  # the refill, with nothing in flight
    assert tally.stalled_s() >= 10
    tally.record(1, OK, time.perf_counter(), "r1")  # an answer ends the stall
    tally.sending()
    assert tally.stalled_s() < 1
    tally.record(2, OK, time.perf_counter(), "r2")
    tally.sending()  # after an answer and an empty window: an idle spell ends here
    assert tally.stalled_s() < 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"requests": 0}, "--requests must be at least 1"),
        ({"concurrency": -1}, "--concurrency must be at least 1"),
        ({"payload_bytes": -1}, "--payload-bytes must be at least 0"),
        ({"rate": -2.0}, "--rate must be a positive number"),
        ({"timeout_s": 0.0}, "--timeout must be a positive number"),
        ({"workers": -1}, "--workers must be from 0"),
        ({"workers": 0}, "--embedded needs --workers 1 or more"),
        ({"redis_url": "redis://h/0", "workers": 0}, "--workers 0 needs --queue"),
        ({"queue": "no spaces"}, "invalid queue name"),
        ({"handler": "nocolon"}, "handler must look like module:function"),
        ({"max_wait_ms": -1}, "max_wait_ms must be an integer"),
    ],
)
def test_bad_settings_are_refused_in_one_line(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        Settings(**{"redis_url": None, **overrides})  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_results_are_checked_only_for_handlers_that_echo() -> None:
    assert Settings(redis_url=None).checks_results
    assert Settings(redis_url=None, handler="redbatch.handlers:sleep").checks_results
    assert not Settings(redis_url=None, handler="redbatch.models.minilm:embed").checks_results
    assert not Settings(redis_url=None, verify=False).checks_results
