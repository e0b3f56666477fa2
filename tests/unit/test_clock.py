"""redbatch.clock: Redis's time, counted on with the monotonic clock, never the wall clock."""

from __future__ import annotations

from typing import Any

import redis

from redbatch.clock import RESYNC_S, ServerClock


class FakeTime:
    def __init__(self, server_s: int) -> None:
        self.server_s = server_s
        self.calls = 0
        self.fail = False

    def time(self) -> tuple[int, int]:
        self.calls += 1
        if self.fail:
            raise redis.ConnectionError("down")
        return self.server_s, 250_000


def test_before_a_reading_it_is_the_wall_clock() -> None:
    clock = ServerClock(monotonic=lambda: 5.0, wall=lambda: 1000.5)
    assert not clock.synced
    assert clock.now_ms() == 1_000_500


def test_after_a_reading_the_wall_clock_no_longer_counts() -> None:
    mono = [10.0]
    wall = [99_999.0]  # off by a day: it must not matter
    clock = ServerClock(monotonic=lambda: mono[0], wall=lambda: wall[0])
    clock.sync(FakeTime(2_000))
    assert clock.now_ms() == 2_000_250
    mono[0] += 1.5
    wall[0] -= 3600
    assert clock.now_ms() == 2_001_750
    assert clock.now_s() == 2_001.75


def test_refresh_reads_again_only_when_stale_and_keeps_the_last_on_failure() -> None:
    mono = [0.0]
    clock = ServerClock(monotonic=lambda: mono[0])
    source: Any = FakeTime(3_000)
    clock.refresh(source)
    clock.refresh(source)
    assert source.calls == 1
    mono[0] += RESYNC_S
    source.fail = True
    clock.refresh(source)  # logged, not raised
    assert clock.now_ms() == 3_000_250 + int(RESYNC_S * 1000)
    source.fail = False
    source.server_s = 5_000
    clock.refresh(source)
    assert clock.now_ms() == 5_000_250
