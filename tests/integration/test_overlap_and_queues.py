"""A worker's loop end to end: reading one batch ahead while the handler runs, several queues
with a handler each, and priority lanes read highest first."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from helpers.entries import add_atomically, id_entries, pack, text, wait_results
from helpers.workers import WorkerProcess, assert_drained, wait_until
from redbatch import Producer
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.protocol.streams import ensure_queue

Factory = Callable[..., WorkerProcess]


def test_reads_one_batch_ahead_while_the_handler_runs_and_no_more(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    ids = [f"r{i}" for i in range(40)]
    add_atomically(redis_client, keys.stream, id_entries(ids))
    worker = worker_factory(
        [queue], "redbatch.handlers:sleep", "--max-batch-size", "4", "--handler-option",
        "seconds=1.0",
    )  # fmt: skip

    def started_and_ahead() -> tuple[int, int] | None:
        rows = redis_client.xpending_range(keys.stream, GROUP, "-", "+", 100)
        started = sum(1 for r in rows if r["times_delivered"] >= 2)
        ahead = sum(1 for r in rows if r["times_delivered"] == 1)
        return (started, ahead) if started == 4 and ahead == 4 else None

    # While the first 1 s batch runs: 4 started, the next 4 read (and decoded) ahead...
    wait_until(started_and_ahead, timeout=10, what="4 started and 4 read ahead")
    # ...and nothing more taken from the stream: other workers can still have the rest.
    info = redis_client.xinfo_groups(keys.stream)[0]
    assert info["pending"] == 8
    assert redis_client.xlen(keys.stream) == 40
    worker.stop()
    # The drain wrote the running batch and handed the read-ahead back.
    assert redis_client.xinfo_groups(keys.stream)[0]["pending"] == 0
    assert redis_client.xlen(keys.stream) == 36


def test_each_queue_runs_its_own_handler(
    redis_url: str, namespace: str, queue: str, other_queue: str, worker_factory: Factory
) -> None:
    worker_factory(
        [queue, other_queue], "helpers.handlers:tag",
        "--handler", f"{other_queue}=redbatch.handlers:sleep",
        "--handler-option", f"{queue}:label={queue}-only",
        "--handler-option", f"{other_queue}:seconds=0",
    )  # fmt: skip
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "a", timeout=30) == [f"{queue}-only", "a"]
        assert producer.call(other_queue, "b", timeout=30) == "b"


def test_higher_priority_lanes_run_first(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = {
            priority: [
                producer.submit(queue, f"{priority}{i}", priority=priority) for i in range(5)
            ]
            for priority in ("low", "normal", "high")
        }
        # Strict order (no aging), one request per batch: the start times tell the order.
        worker_factory(
            [queue], "redbatch.handlers:sleep", "--max-batch-size", "1", "--priority-aging-ms",
            "0", "--handler-option", "seconds=0.01",
        )  # fmt: skip
        for priority, group in handles.items():
            assert [h.result(timeout=30) for h in group] == [f"{priority}{i}" for i in range(5)]
        ids = {p: [h.id for h in group] for p, group in handles.items()}
    results = wait_results(redis_client, keys, [i for group in ids.values() for i in group])
    start = {rid: int(text(r)["start"]) for rid, r in results.items()}
    assert max(start[i] for i in ids["high"]) < min(start[i] for i in ids["normal"])
    assert max(start[i] for i in ids["normal"]) < min(start[i] for i in ids["low"])
    for stream in keys.streams:
        assert_drained(redis_client, stream)


def test_the_same_entry_id_in_two_lanes_is_two_requests(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    """Lanes are separate streams: entry ids repeat across them (same millisecond) and must
    never be confused (one request lost, the other answered twice)."""
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    redis_client.xadd(keys.stream_for("high"), {"id": "in-high", "payload": pack(1)}, id="5-1")
    redis_client.xadd(keys.stream_for("normal"), {"id": "in-normal", "payload": pack(2)}, id="5-1")
    redis_client.xadd(keys.stream_for("low"), {"id": "in-low", "payload": pack(3)}, id="5-1")
    worker_factory([queue], "redbatch.handlers:echo", "--max-wait-ms", "50")
    results = wait_results(redis_client, keys, ["in-high", "in-normal", "in-low"])
    assert {rid: text(r)["status"] for rid, r in results.items()} == dict.fromkeys(results, "ok")
    assert {rid: text(r)["batch"] for rid, r in results.items()} == dict.fromkeys(results, "3")
    for stream in keys.streams:
        assert_drained(redis_client, stream)


def test_a_latency_target_stops_lone_requests_waiting_out_a_long_window(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    """--max-wait-ms 3000 alone makes every lone request wait 3 s for company; with a 200 ms
    target the worker learns that no company comes and runs them at once."""
    worker_factory(
        [queue], "redbatch.handlers:echo", "--max-wait-ms", "3000", "--max-batch-size", "16",
        "--target-latency-ms", "200",
    )  # fmt: skip
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        producer.call(queue, "warm-up", timeout=30)
        for i in range(3):
            began = time.monotonic()
            assert producer.call(queue, i, timeout=30) == i
            assert time.monotonic() - began < 1.5  # generous; the static window is 3 s
        # And a burst still comes back whole.
        assert producer.map(queue, list(range(100)), timeout=30) == list(range(100))
