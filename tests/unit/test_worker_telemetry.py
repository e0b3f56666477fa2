"""A worker's telemetry without processes: statistics accumulation and flushing, the busy
ratio, Prometheus samples, the failed-batch log line."""

from __future__ import annotations

import logging
import threading

import fakeredis
import pytest
import redis

from redbatch.protocol import stats
from redbatch.protocol.fields import DEAD, ERROR, OK, Outcome, Request
from redbatch.protocol.keys import KeySpace
from redbatch.worker.executor import Ran
from redbatch.worker.heartbeat import Heartbeat, Progress
from redbatch.worker.stats_buffer import StatsBuffer
from redbatch.worker.telemetry import RETRY, BusyWindow, Telemetry, outcome_of

KEYS = KeySpace("t").queue("q")
T0 = 1_000_000.0  # unix seconds: slot 100_000


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ran(
    n: int, *, status: str = OK, start: int = 5_000, enq: int = 4_990, attempt: int = 1,
    retry: bool = False, error: str = "",
) -> list[Ran]:  # fmt: skip
    body = error.encode() if error else b"x"
    return [
        Ran(
            Request("q", f"{i}-0", f"r{i}", b"p", enq=enq, attempt=attempt),
            Outcome(f"r{i}", status, body), start, start + 7, n, retry=retry,
        )
        for i in range(n)
    ]  # fmt: skip


# -- statistics buffer --------------------------------------------------------------------------


def test_batches_accumulate_per_queue_and_slot_and_take_empties_the_buffer() -> None:
    clock = Clock()
    buffer = StatsBuffer(clock)
    buffer.add("q", [10.0, 20.0], 5.0, [OK, ERROR])
    buffer.add("q", [30.0], 5.0, [OK], unrun={DEAD: 2})
    clock.now += stats.SLOT_S  # the next slot
    buffer.add("q", [1.0], 1.0, [OK])
    taken = buffer.take()
    assert sorted(taken) == [("q", 100_000), ("q", 100_001)]
    first = taken[("q", 100_000)]
    assert (first.items, first.batches, first.busy_us) == (5, 2, 10_000)
    assert first.outcomes == {OK: 2, ERROR: 1, DEAD: 2}
    # malformed entries never reached the handler: no service time for them
    assert sum(first.service.values()) == 3
    assert sum(first.wait.values()) == 3
    assert buffer.take() == {}


def test_a_batch_of_malformed_entries_only_counts_items_not_a_batch() -> None:
    buffer = StatsBuffer(Clock())
    buffer.add("q", [], 0.0, [], unrun={DEAD: 3})
    (counts,) = buffer.take().values()
    assert (counts.items, counts.batches, counts.outcomes) == (3, 0, {DEAD: 3})
    assert counts.service == {}


def test_put_back_keeps_counts_for_the_next_flush_but_drops_slots_nobody_reads() -> None:
    clock = Clock()
    buffer = StatsBuffer(clock)
    buffer.add("q", [1.0], 1.0, [OK])
    taken = buffer.take()
    buffer.add("q", [1.0], 1.0, [OK])  # added while the failed flush ran
    buffer.put_back(taken)
    assert buffer.pending() == 2
    taken = buffer.take()
    clock.now += stats.SLOT_S * stats.WINDOW_SLOTS  # a long outage: out of every window
    buffer.put_back(taken)
    assert buffer.pending() == 0


def heartbeat(client: redis.Redis, progress: Progress, buffer: StatsBuffer) -> Heartbeat:
    return Heartbeat(
        client, [KEYS], "w1", progress, ttl_s=5, batch_timeout_s=30, drain_timeout_s=5,
        stop=threading.Event(), stats=buffer,
    )  # fmt: skip


def test_a_beat_writes_the_heartbeat_with_busy_and_adds_the_stats_to_the_slot_hash() -> None:
    client = fakeredis.FakeRedis()
    clock = Clock()
    buffer = StatsBuffer(clock)
    progress = Progress(state="serving", batch_started=1.0, busy_us=8000)
    beat = heartbeat(client, progress, buffer)
    buffer.add("q", [10.0, 10.0], 4.0, [OK, ERROR])
    beat.beat()
    buffer.add("q", [10.0], 4.0, [OK])
    progress.batch_started = None
    beat.beat()
    worker = client.hgetall(KEYS.worker("w1"))
    assert worker[b"busy"] == b"0"
    assert worker[b"busy_us"] == b"8000"
    assert worker[b"state"] == b"serving"
    key = KEYS.stats(stats.slot_of(T0))
    fields = client.hgetall(key)
    assert fields[b"items"] == b"3"
    assert fields[b"batches"] == b"2"
    assert fields[b"o:ok"] == b"2"
    assert fields[b"o:error"] == b"1"
    assert fields[b"busy_us"] == b"8000"
    assert 0 < client.ttl(key) <= stats.TTL_S
    assert stats.merge([fields]).items == 3  # what readers get back


def test_busy_field_is_1_while_a_batch_runs() -> None:
    client = fakeredis.FakeRedis()
    heartbeat(client, Progress(batch_started=1.0), StatsBuffer()).beat()
    assert client.hget(KEYS.worker("w1"), "busy") == b"1"


class DownPipeline:
    """A pipeline whose execute fails like a Redis outage."""

    def __init__(self) -> None:
        self.commands = 0

    def __getattr__(self, name: str) -> object:
        def queue(*args: object, **kwargs: object) -> None:
            self.commands += 1

        return queue

    def execute(self) -> None:
        raise redis.ConnectionError("down")


class DownClient:
    """A Redis that is down: every command fails (the beat reads the server's clock, TIME,
    unless the process's clock was synced lately by an earlier test: order must not matter)."""

    def pipeline(self, transaction: bool = True) -> DownPipeline:
        return DownPipeline()

    def time(self) -> tuple[int, int]:
        raise redis.ConnectionError("down")


def test_a_failed_beat_keeps_the_stats_for_the_next_one() -> None:
    buffer = StatsBuffer()
    beat = heartbeat(DownClient(), Progress(), buffer)  # type: ignore[arg-type]
    buffer.add("q", [1.0], 1.0, [OK, OK])
    with pytest.raises(redis.ConnectionError):
        beat.beat()
    assert buffer.pending() == 2


def test_stopping_flushes_what_is_left_and_deletes_the_heartbeat() -> None:
    client = fakeredis.FakeRedis()
    buffer = StatsBuffer()
    beat = heartbeat(client, Progress(), buffer)
    beat.beat()
    buffer.add("q", [1.0], 1.0, [OK])
    beat.stop()
    assert not client.exists(KEYS.worker("w1"))
    slots = list(client.scan_iter(match=KEYS.stats(0).replace(":0", ":*")))
    assert [client.hget(k, "items") for k in slots] == [b"1"]


# -- busy ratio ---------------------------------------------------------------------------------


def test_busy_ratio_is_handler_time_over_the_last_ten_seconds() -> None:
    window = BusyWindow(10.0, now=0.0)
    window.record(10.0, 12.0)
    window.record(14.0, 15.0)
    assert window.ratio(20.0) == pytest.approx(0.3)
    # at 21 the window starts at 11: 1 s of the first run, 1 s, and 2 s of the running batch
    assert window.ratio(21.0, running_since=19.0) == pytest.approx(0.4)
    assert window.ratio(40.0) == 0.0


def test_busy_ratio_right_after_start_counts_only_the_time_since_start() -> None:
    window = BusyWindow(10.0, now=100.0)
    window.record(100.0, 101.0)
    assert window.ratio(102.0) == pytest.approx(0.5)
    assert window.ratio(100.0) == 0.0
    assert window.ratio(103.0, running_since=100.0) == 1.0  # never above 1


# -- outcomes, Prometheus samples, log lines ------------------------------------------------------


def test_a_retry_past_max_attempts_counts_as_dead() -> None:
    assert outcome_of(ran(1, status=ERROR, retry=True, attempt=1)[0], max_attempts=3) == RETRY
    assert outcome_of(ran(1, status=ERROR, retry=True, attempt=3)[0], max_attempts=3) == DEAD
    assert outcome_of(ran(1)[0], max_attempts=3) == OK


def sample(t: Telemetry, name: str, **labels: str) -> float:
    assert t.metrics is not None
    value = t.metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_batch_done_moves_the_prometheus_series_and_the_stats() -> None:
    clock = Clock(50.0)
    progress = Progress()
    t = Telemetry(["q"], progress, max_attempts=3, metrics_port=1, clock=clock)
    assert sample(t, "redbatch_requests_total", queue="q", outcome="ok") == 0
    t.batch_done("q", ran(3, start=5_000, enq=4_750), malformed=1, service_s=0.02)
    t.batch_done("q", ran(1, status=ERROR, error="ValueError: no"), malformed=0, service_s=0.01)
    assert sample(t, "redbatch_requests_total", queue="q", outcome="ok") == 3
    assert sample(t, "redbatch_requests_total", queue="q", outcome="error") == 1
    assert sample(t, "redbatch_requests_total", queue="q", outcome="dead") == 1
    assert sample(t, "redbatch_batch_size_count", queue="q") == 2
    assert sample(t, "redbatch_batch_size_sum", queue="q") == 4
    assert sample(t, "redbatch_queue_wait_seconds_count", queue="q") == 4
    assert sample(t, "redbatch_queue_wait_seconds_sum", queue="q") == pytest.approx(
        0.76
    )  # 3 x 250 ms + 10 ms
    assert sample(t, "redbatch_handler_seconds_count", queue="q") == 2
    assert sample(t, "redbatch_handler_busy_seconds_total", queue="q") == pytest.approx(0.03)
    assert t.stats.pending() == 5


def test_in_flight_and_busy_gauges_read_the_running_batch() -> None:
    progress = Progress()
    t = Telemetry(["q", "r"], progress, max_attempts=3, metrics_port=1)
    assert sample(t, "redbatch_items_in_flight", queue="q") == 0
    progress.batch_queue, progress.batch_items, progress.batch_started = "q", 12, 0.0
    assert sample(t, "redbatch_items_in_flight", queue="q") == 12  # running since long ago
    assert sample(t, "redbatch_items_in_flight", queue="r") == 0
    assert sample(t, "redbatch_worker_busy_ratio") == 1.0
    progress.batch_started = None
    assert sample(t, "redbatch_items_in_flight", queue="q") == 0


def test_without_a_port_there_are_no_metrics_but_stats_still_count() -> None:
    t = Telemetry(["q"], Progress(), max_attempts=3)
    t.batch_done("q", ran(2), malformed=0, service_s=0.01)
    assert t.metrics is None
    assert t.stats.pending() == 2


def test_one_warning_per_batch_with_failures_and_none_for_a_good_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = Telemetry(["q"], Progress(), max_attempts=3)
    with caplog.at_level(logging.INFO, logger="redbatch.worker.telemetry"):
        t.batch_done("q", ran(4), malformed=0, service_s=0.01)
        assert caplog.records == []
        failed = ran(2, status=ERROR, error="ValueError: poison payload") + ran(1)
        t.batch_done("q", failed, malformed=0, service_s=0.01)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.WARNING
    assert "queue q: 2 of 3 items" in line
    assert "2 error" in line
    assert "ValueError: poison payload" in line
