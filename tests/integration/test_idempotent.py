"""Idempotent submit: an id that is waiting, running or finished is not run again, and every
caller gets the same outcome (guard set on Redis 7.0, which has no XADD IDMP)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from helpers.entries import WAIT_S, wait_results
from helpers.workers import WorkerProcess, assert_drained, wait_until
from redbatch import Producer, RequestDead
from redbatch.protocol.keys import GROUP, KeySpace

Factory = Callable[..., WorkerProcess]


def test_two_producers_same_id_run_once_and_both_get_the_outcome(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with (
        Producer.from_url(redis_url, namespace=namespace) as first,
        Producer.from_url(redis_url, namespace=namespace) as second,
    ):
        a = first.submit(queue, "from first", id="job-1")
        b = second.submit(queue, "from second", id="job-1")
        # Only the first was added; the second joined it.
        assert redis_client.xlen(keys.stream) == 1
        assert redis_client.smembers(keys.guard("job-1")) == {
            first.id.encode(),
            second.id.encode(),
        }
        worker_factory([queue], "helpers.handlers:pid")
        pid = a.result(timeout=WAIT_S)
        assert b.result(timeout=WAIT_S) == pid
    # Guards end with the first outcome; one result, one run.
    assert not redis_client.exists(keys.guard("job-1"))
    assert redis_client.hget(keys.result("job-1"), "status") == b"ok"
    assert_drained(redis_client, keys.stream)


def test_finished_id_answers_from_the_stored_result_without_running(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory([queue])
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "original", timeout=WAIT_S) == "original"
        handle = producer.submit(queue, "first", id="once")
        assert handle.result(timeout=WAIT_S) == "first"
        ended = redis_client.hget(keys.result("once"), "end")
        assert worker.stop() == 0  # nothing can run it again now
        for _ in range(2):  # the same producer, then a fresh one
            again = producer.submit(queue, "second", id="once")
            assert again.result(timeout=WAIT_S) == "first"
        with Producer.from_url(redis_url, namespace=namespace) as other:
            assert other.submit(queue, "third", id="once").result(timeout=WAIT_S) == "first"
    assert redis_client.xlen(keys.stream) == 0
    assert redis_client.hget(keys.result("once"), "end") == ended


def test_follower_of_a_dead_lettered_request_is_told(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    scheduler_factory: Factory,
) -> None:
    """The scheduler's dead-letter path tells every producer waiting on the id."""
    keys = KeySpace(namespace).queue(queue)
    with (
        Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as first,
        Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as second,
    ):
        a = first.submit(queue, "x", id="doomed")
        # A worker that started it and died (no heartbeat ever): the scheduler reclaims it.
        # Started = delivery count 2, as a worker marks a batch before running it.
        read = redis_client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=10)
        ids = [entry_id for entry_id, _ in read[0][1]]
        redis_client.xclaim(keys.stream, GROUP, "ghost", 0, ids, justid=True, retrycount=2)
        b = second.submit(queue, "x", id="doomed")
        scheduler_factory("--max-attempts", "1")
        for handle in (a, b):
            with pytest.raises(RequestDead, match="ghost"):
                handle.result(timeout=WAIT_S)
    wait_until(lambda: not redis_client.exists(keys.guard("doomed")), what="guard cleared")
    assert len(redis_client.xrange(keys.dead)) == 1
    assert_drained(redis_client, keys.stream)


def test_map_ids_are_not_guarded(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    """Random ids cannot collide: map's hot path skips the guard entirely."""
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [producer.submit(queue, i) for i in range(3)]
        assert not any(redis_client.exists(keys.guard(h.id)) for h in handles)
        worker_factory([queue])
        assert [h.result(timeout=WAIT_S) for h in handles] == [0, 1, 2]
    wait_results(redis_client, keys, [h.id for h in handles])
    assert_drained(redis_client, keys.stream)
