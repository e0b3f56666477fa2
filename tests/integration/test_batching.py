"""The batch former inside a real worker: cost budgets and preferred sizes end to end."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from helpers.entries import add_atomically, id_entries, pack, text, wait_results
from helpers.workers import WorkerProcess, assert_drained, wait_serving
from redbatch.protocol.keys import KeySpace
from redbatch.protocol.streams import ensure_queue

Factory = Callable[..., WorkerProcess]


def test_cost_budget_splits_batches_and_an_oversized_request_runs_alone(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    """Seed 003: a request larger than the budget must run (alone), never block the queue."""
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    costs = {"a": 4, "b": 4, "c": 4, "huge": 50, "d": 1}
    add_atomically(
        redis_client,
        keys.stream,
        [{"id": rid, "cost": cost, "payload": pack(rid)} for rid, cost in costs.items()],
    )
    worker_factory([queue], "redbatch.handlers:echo", "--max-batch-cost", "10")
    results = wait_results(redis_client, keys, list(costs))
    batch = {rid: int(text(r)["batch"]) for rid, r in results.items()}
    # In order, within the budget: a+b (8; +c would be 12), c (then huge breaks it),
    # huge alone (over the budget), d.
    assert batch == {"a": 2, "b": 2, "c": 1, "huge": 1, "d": 1}
    assert {text(r)["status"] for r in results.values()} == {"ok"}
    assert_drained(redis_client, keys.stream)


def test_preferred_size_runs_before_the_window(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory(
        [queue], "redbatch.handlers:echo",
        "--max-batch-size", "32", "--max-wait-ms", "5000", "--preferred-batch-sizes", "4,8",
    )  # fmt: skip
    wait_serving(worker)
    ids = [f"p{i}" for i in range(4)]
    began = time.monotonic()
    add_atomically(redis_client, keys.stream, id_entries(ids))
    results = wait_results(redis_client, keys, ids, timeout=2.5)
    assert time.monotonic() - began < 2.5  # well before the 5 s window
    assert {text(r)["batch"] for r in results.values()} == {"4"}
    assert_drained(redis_client, keys.stream)


def test_a_lone_request_does_not_wait_out_the_window(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    """Issue 21: with nothing else arriving, a window is latency that buys nothing."""
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory([queue], "redbatch.handlers:echo", "--max-wait-ms", "5000")
    wait_serving(worker)
    began = time.monotonic()
    add_atomically(redis_client, keys.stream, [{"id": "lone", "payload": pack("lone")}])
    results = wait_results(redis_client, keys, ["lone"], timeout=2.5)
    assert time.monotonic() - began < 2.5  # well before the 5 s window
    assert text(results["lone"])["batch"] == "1"
    assert_drained(redis_client, keys.stream)
