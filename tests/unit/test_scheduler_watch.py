"""The scheduler's index of queues holding work (scheduler.watch) and status's choice of the
queues a summary details (ops.status.choose): pure rules, and the index on fakeredis."""

from __future__ import annotations

import fakeredis
import pytest

from redbatch import liveness_files
from redbatch.config import SchedulerConfig
from redbatch.ops.status.choose import Sizes, choose
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.scheduler.service import Scheduler
from redbatch.scheduler.watch import KEEP_MS, Watch, needs_upkeep, sweep_count

NOW = 1_700_000_000_000


def _group(pending: int = 0, consumers: int = 0) -> list[dict[str, object]]:
    return [{"name": GROUP.encode(), "pending": pending, "consumers": consumers}]


def test_an_idle_queue_needs_no_upkeep_and_any_held_work_does() -> None:
    assert not needs_upkeep([_group(), [], _group()], delayed=0)
    assert needs_upkeep([_group(), _group(pending=1), []], delayed=0)
    assert needs_upkeep([_group(consumers=1), [], []], delayed=0)  # a consumer to clean up
    assert needs_upkeep([[], [], []], delayed=2)
    # Another group's entries are not the scheduler's business.
    assert not needs_upkeep([[{"name": b"other", "pending": 5, "consumers": 1}]], delayed=0)


def test_the_sweep_covers_every_queue_once_per_sweep_period() -> None:
    assert sweep_count(10_000, interval_s=1.0, sweep_s=60.0) == 167  # 60 passes x 167 >= 10,000
    assert sweep_count(10_000, interval_s=2.0, sweep_s=60.0) == 334
    assert sweep_count(5, interval_s=1.0) == 10  # a floor: SSCAN counts are hints
    assert sweep_count(100, interval_s=120.0, sweep_s=60.0) == 100  # slower passes: all each


def _queue(client: fakeredis.FakeRedis, name: str) -> None:
    keys = KeySpace().queue(name)
    for stream in keys.streams:
        client.xgroup_create(stream, GROUP, "0", mkstream=True)
    client.sadd(KeySpace().queues, name)
    client.xadd(keys.stream, {"id": f"r-{name}"})


def _watch(client: fakeredis.FakeRedis, clock: list[int]) -> Watch:
    return Watch(client, KeySpace(), 1.0, sweep_s=10.0, now_ms=lambda: clock[0])


def test_only_queues_holding_work_are_selected_and_marked() -> None:
    client = fakeredis.FakeRedis()
    for i in range(50):
        _queue(client, f"idle{i:02d}")
    _queue(client, "held")
    client.xreadgroup(GROUP, "w1", {KeySpace().queue("held").stream: ">"}, count=1)
    clock = [NOW]
    watch = _watch(client, clock)

    first = watch.select()  # the first pass sweeps every queue
    assert [q.name for q in first.busy] == ["held"]
    assert len(first.probed) == 51
    assert client.zscore(KeySpace().watch, "held") == NOW

    # Later passes probe the marked queues and one slice of the sweep, not every queue.
    clock[0] += 1000
    later = watch.select()
    assert [q.name for q in later.busy] == ["held"]
    assert len(later.probed) < 51


def test_a_marked_queue_is_found_between_sweeps_and_forgotten_after_keep() -> None:
    client = fakeredis.FakeRedis()
    for i in range(40):
        _queue(client, f"idle{i:02d}")
    clock = [NOW]
    watch = _watch(client, clock)
    assert watch.select().busy == []

    # A worker starts on idle07, marks it, and reads an entry: the next pass sees it whatever
    # slice the sweep is at.
    key = KeySpace().watch
    client.zadd(key, {"idle07": clock[0]})
    client.xreadgroup(GROUP, "w1", {KeySpace().queue("idle07").stream: ">"}, count=1)
    clock[0] += 1000
    assert [q.name for q in watch.select().busy] == ["idle07"]

    # Its entry is acked and its consumer leaves: the marks age out, the index forgets it.
    stream = KeySpace().queue("idle07").stream
    for entry_id, _fields in client.xrange(stream):
        client.xack(stream, GROUP, entry_id)
    client.xgroup_delconsumer(stream, GROUP, "w1")
    clock[0] += KEEP_MS + 1000
    assert watch.select().busy == []
    assert client.zscore(key, "idle07") is None


def test_a_summary_details_the_served_queues_and_those_holding_most() -> None:
    sizes = {
        "a": Sizes(length=1),
        "b": Sizes(length=9),
        "c": Sizes(dead=5),
        "d": Sizes(),
        "served": Sizes(),
    }
    assert choose(sizes, always={"served", "gone"}, limit=2) == ["b", "c", "served"]
    assert choose(sizes, always=(), limit=10) == ["a", "b", "c"]  # empty queues: not shown


def test_every_pass_is_recorded_on_the_beat_the_probes_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(liveness_files, "write", lambda *args: None)
    client = fakeredis.FakeRedis()
    _queue(client, "idle")
    times = iter([10.0, 20.0])
    config = SchedulerConfig(redis_url="redis://127.0.0.1:1/0")
    scheduler = Scheduler(config, client=client, clock=lambda: next(times))
    beat = scheduler.beat  # what /healthz and /readyz are given at start
    scheduler.run_pass(scheduler.duties)
    scheduler.run_pass(scheduler.duties)
    assert scheduler.beat is beat
    assert beat.passed == 20.0
