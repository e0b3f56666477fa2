"""The per-queue statistics kept in Redis: buckets, merging, percentiles."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redbatch.protocol import stats


@given(st.floats(0, 1e7, allow_nan=False))
def test_a_value_lies_within_its_bucket(ms: float) -> None:
    k = stats.bucket(ms)
    assert ms <= stats.upper_ms(k) * (1 + 1e-9) or k == 120
    if k > 0:
        assert ms > stats.upper_ms(k - 1) * (1 - 1e-9)


def test_counts_round_trip_through_hash_fields_and_merge() -> None:
    a = stats.Counts()
    a.add_batch([1.0, 2.0, 40.0], 10.0, ["ok", "ok", "error"])
    b = stats.Counts()
    b.add_batch([1.0], 5.0, ["ok"])
    merged = stats.merge([{k.encode(): str(v).encode() for k, v in a.fields().items()},
                          b.fields(), {b"junk": b"x", b"w:nope": b"1"}])  # fmt: skip
    assert merged.items == 4
    assert merged.batches == 2
    assert merged.busy_us == 15_000
    assert merged.outcomes == {"ok": 3, "error": 1}
    assert sum(merged.wait.values()) == 4
    assert sum(merged.service.values()) == 4


def test_percentiles_from_buckets() -> None:
    c = stats.Counts()
    c.add_batch([1.0] * 98 + [100.0, 100.0], 10.0, ["ok"] * 100)
    p50 = stats.percentile_ms(c.wait, 0.5)
    p99 = stats.percentile_ms(c.wait, 0.99)
    assert p50 is not None and 1.0 <= p50 < 1.3
    assert p99 is not None and 100.0 <= p99 < 126
    assert stats.percentile_ms({}, 0.5) is None


def test_window_is_the_last_minute_newest_first() -> None:
    assert stats.window_slots(1005.0) == [100, 99, 98, 97, 96, 95]


def test_batch_sizes_fall_in_power_of_two_buckets_and_merge() -> None:
    assert [stats.size_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 32, 33)] == [
        0, 1, 2, 2, 3, 3, 4, 5, 6,
    ]  # fmt: skip
    assert [stats.size_upper(k) for k in (0, 1, 5)] == [1, 2, 32]
    a = stats.Counts()
    a.add_batch([1.0] * 32, 10.0, ["ok"] * 32)
    a.add_batch([1.0] * 3, 10.0, ["ok"] * 3)
    b = stats.Counts()
    b.add_batch([1.0] * 30, 10.0, ["ok"] * 30)
    assert a.fields()["b:5"] == 1 and a.fields()["b:2"] == 1
    merged = stats.merge([a.fields(), b.fields(), {b"b:x": b"1"}])
    assert merged.sizes == {5: 2, 2: 1}
    assert merged.batches == 3
