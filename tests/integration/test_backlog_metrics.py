"""The autoscaling signal: the scheduler's redbatch_queue_backlog equals the requests truly
waiting over 3 lanes x 2 shards while a slow worker drains them, and the oldest waiting age
grows while nothing is served."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from helpers.metrics import free_port, scrape, try_scrape, value
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer
from redbatch.ops.queue import set_shards
from redbatch.protocol.keys import PRIORITIES, KeySpace

pytestmark = pytest.mark.integration
Factory = Callable[..., WorkerProcess]
WAIT_S = 60.0
BATCH = 4  # the worker's max batch size
PER_LANE_SHARD = 6  # requests per (lane, shard): 36 in all


def backlog_of(port: int, queue: str) -> float:
    return value(scrape(port), "redbatch_queue_backlog", queue=queue)


def test_backlog_and_oldest_age_follow_the_queue(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    set_shards(redis_client, KeySpace(namespace), queue, 2)
    port = free_port()
    scheduler_factory("--metrics-port", str(port))
    wait_until(lambda: try_scrape(port), WAIT_S, "the scheduler's endpoint")
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [
            producer.submit(queue, [lane, i], priority=lane, timeout=WAIT_S * 2)
            for lane in PRIORITIES
            for i in range(2 * PER_LANE_SHARD)
        ]
        total = len(handles)
        assert {(h.queue, lane) for h, lane in zip(handles, [p for p in PRIORITIES
                for _ in range(2 * PER_LANE_SHARD)], strict=True)} == {
            (f"{queue}#{k}", lane) for k in range(2) for lane in PRIORITIES
        }  # fmt: skip

        # Nothing served: every request waits, and the oldest's age grows pass after pass.
        wait_until(lambda: backlog_of(port, queue) == total, WAIT_S, f"backlog {total}")
        age = "redbatch_queue_oldest_waiting_seconds"
        first = value(scrape(port), age, queue=queue)
        assert first > 0
        wait_until(lambda: value(scrape(port), age, queue=queue) >= first + 0.5, WAIT_S, "age")

        # A slow worker (0.3 s a batch of at most 4) drains it. Waiting = not done, not
        # running and not ran-but-unwritten (results go out as the next batch starts): up
        # to two batches below "not done"; the gauge may be one pass old (0.2 s, under one
        # batch's run), so up to one batch above it.
        wait_serving(
            worker_factory(
                [queue], "redbatch.handlers:sleep", "--handler-option", "seconds=0.3",
                "--max-batch-size", str(BATCH), "--max-wait-ms", "0",
            )
        )  # fmt: skip
        seen = []
        while True:
            done_before = sum(h.done() for h in handles)
            gauge = backlog_of(port, queue)
            done_after = sum(h.done() for h in handles)
            seen.append(gauge)
            assert total - done_after - 2 * BATCH <= gauge <= total - done_before + BATCH
            if done_before == total:
                break
            wait_until(lambda n=done_before: sum(h.done() for h in handles) > n, WAIT_S, "more")
        assert max(seen) > BATCH  # the comparison ran while a backlog was there
        wait_until(lambda: backlog_of(port, queue) == 0, WAIT_S, "backlog 0")
        wait_until(lambda: value(scrape(port), age, queue=queue) == 0, WAIT_S, "age 0")
