"""The probes' decisions: pure functions of what the loops recorded and the time."""

from __future__ import annotations

from redbatch.scheduler import probes as scheduler_probes
from redbatch.scheduler.probes import Beat
from redbatch.worker.heartbeat import Progress
from redbatch.worker.probes import Bounds, liveness, readiness

BOUNDS = Bounds(batch_timeout_s=300, drain_timeout_s=20, heartbeat_ttl_s=5, block_s=1)


def serving(now: float) -> Progress:
    return Progress(state="serving", renewed=now - 1, turned=now - 0.5)


def test_a_healthy_serving_worker_is_live_and_ready() -> None:
    assert liveness(serving(100), 100, BOUNDS) == ""
    assert readiness(serving(100), 100, BOUNDS) == ""


def test_starting_is_live_but_not_ready() -> None:
    p = Progress()  # warming up: nothing renewed or turned yet
    assert liveness(p, 1000, BOUNDS) == ""
    assert readiness(p, 1000, BOUNDS).startswith("starting")


def test_draining_is_not_ready() -> None:
    p = serving(100)
    p.state = "draining"
    assert readiness(p, 100, BOUNDS).startswith("draining")
    assert liveness(p, 100, BOUNDS) == ""


def test_an_overrun_batch_fails_liveness() -> None:
    p = serving(1000)
    p.batch_started = 1000 - 301
    assert "batch_timeout (300 s)" in liveness(p, 1000, BOUNDS)
    p.batch_started = 1000 - 299
    assert liveness(p, 1000, BOUNDS) == ""
    p.stop_requested = 1000 - 21
    assert "drain_timeout (20 s)" in liveness(p, 1000, BOUNDS)


def test_redis_unreachable_fails_readiness_at_once_and_liveness_past_the_bound() -> None:
    p = serving(100)
    p.renewed = 100 - 6  # past the TTL (5 s)
    p.turned = 100
    assert readiness(p, 100, BOUNDS).startswith("not connected")
    assert liveness(p, 100, BOUNDS) == ""
    p.renewed = 100 - 31  # past 6 TTLs
    assert "Redis unreachable" in liveness(p, 100, BOUNDS)


def test_a_loop_that_stopped_turning_fails_liveness_unless_a_batch_runs() -> None:
    p = serving(100)
    p.turned = 100 - 32  # 30 s bound + 1 s block
    assert "main loop has not turned" in liveness(p, 100, BOUNDS)
    p.batch_started = 100 - 40  # waiting on the handler is what batch_timeout is for
    assert liveness(p, 100, BOUNDS) == ""


def test_scheduler_probes() -> None:
    beat = Beat()
    assert scheduler_probes.readiness(beat).startswith("starting")
    assert scheduler_probes.liveness(beat, 100, 1.0) == ""
    beat.passed = 99.0
    assert scheduler_probes.readiness(beat) == ""
    beat.unreachable_since = 90.0
    assert scheduler_probes.readiness(beat).startswith("not connected")
    assert scheduler_probes.liveness(beat, 100, 1.0) == ""
    assert "Redis unreachable for 31 s" in scheduler_probes.liveness(beat, 121, 1.0)
    beat.unreachable_since = None
    assert "has not run a pass" in scheduler_probes.liveness(beat, 99 + 32, 1.0)
