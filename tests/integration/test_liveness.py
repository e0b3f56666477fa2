"""Worker liveness and stopping: heartbeat, batch_timeout, drain with hand-back, cancel,
isolation of redelivered requests. Real worker processes on a private redis-server."""

from __future__ import annotations

import signal
import time

import msgpack
import redis

from helpers.entries import WAIT_S, add_atomically, pack, text, wait_results
from helpers.workers import WorkerFactory, assert_drained, wait_serving, wait_until
from redbatch import Producer, RequestCancelled
from redbatch.cli import EXIT_INTERRUPTED
from redbatch.protocol.keys import KeySpace
from redbatch.protocol.streams import ensure_queue
from redbatch.worker.heartbeat import EXIT_BATCH_TIMEOUT, EXIT_DRAIN_TIMEOUT


def consumers(client: redis.Redis, stream: str) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(stream, "workers")}


def test_heartbeat_while_serving_and_gone_after_a_clean_stop(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = wait_serving(worker_factory([queue], "redbatch.handlers:echo", "--heartbeat-ttl", "3"))
    beat = text(wait_until(lambda: redis_client.hgetall(keys.worker(worker.name)), what="beat"))
    assert beat["pid"] == str(worker.proc.pid)
    assert beat["queues"] == queue
    assert beat["batch_timeout"] == "300"
    assert beat["state"] == "serving"
    assert 0 < redis_client.ttl(keys.worker(worker.name)) <= 3
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "hi", timeout=WAIT_S) == "hi"
    assert worker.name in consumers(redis_client, keys.stream)
    # The beat renews with progress: the counters reach the heartbeat within a TTL or two.
    wait_until(lambda: redis_client.hget(keys.worker(worker.name), "items") == b"1", what="items=1")
    assert worker.stop() == 0
    assert not redis_client.exists(keys.worker(worker.name))
    # A clean stop leaves the group too, so XINFO CONSUMERS stays true.
    assert worker.name not in consumers(redis_client, keys.stream)
    assert_drained(redis_client, keys.stream)


def test_batch_past_batch_timeout_ends_the_process_and_its_heartbeat(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = wait_serving(
        worker_factory(
            [queue], "helpers.handlers:hang_on", "--batch-timeout", "1", "--heartbeat-ttl", "2"
        )
    )
    worker.expected_exit = EXIT_BATCH_TIMEOUT
    began = time.monotonic()
    redis_client.xadd(keys.stream, {"id": "h1", "payload": pack("hang")})
    assert worker.proc.wait(timeout=WAIT_S) == EXIT_BATCH_TIMEOUT
    assert time.monotonic() - began < 15
    assert "batch_timeout" in worker.log()
    # It stopped renewing: the heartbeat lapses, and the entry is still pending for the
    # scheduler to re-queue (nothing was lost by the exit).
    wait_until(lambda: not redis_client.exists(keys.worker(worker.name)), what="heartbeat gone")
    assert redis_client.xpending(keys.stream, "workers")["pending"] == 1
    redis_client.delete(keys.stream)  # nothing of this test's queue is left behind


def test_sigterm_hands_unstarted_entries_back_at_once(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    other_queue: str,
    worker_factory: WorkerFactory,
) -> None:
    """Seed 000: stopping must not strand requests held in memory.

    A worker on two queues reads a batch from each; it runs one and holds the other. On
    SIGTERM it finishes the running batch and hands the held one back to its stream at once:
    another worker serves it without waiting for any reclaim."""
    space = KeySpace(namespace)
    ka, kb = space.queue(queue), space.queue(other_queue)
    for keys in (ka, kb):
        ensure_queue(redis_client, space, keys)
    add_atomically(redis_client, ka.stream, [{"id": f"a{i}", "payload": pack(i)} for i in range(4)])
    add_atomically(redis_client, kb.stream, [{"id": f"b{i}", "payload": pack(i)} for i in range(4)])
    slow = worker_factory(
        [queue, other_queue], "redbatch.handlers:sleep", "--handler-option", "seconds=2"
    )
    # Both batches were delivered to it: 8 pending, one batch running.
    wait_until(lambda: redis_client.xpending(ka.stream, "workers")["pending"] == 4, what="a read")
    wait_until(lambda: redis_client.xpending(kb.stream, "workers")["pending"] == 4, what="b read")
    slow.proc.send_signal(signal.SIGTERM)
    assert slow.proc.wait(timeout=WAIT_S) == 0
    assert "handed 4 unstarted entries back" in slow.log()
    # Nothing pending any more: what ran is answered, what did not is back in its stream.
    for keys in (ka, kb):
        assert redis_client.xpending(keys.stream, "workers")["pending"] == 0
    finished = [k for k in (ka, kb) if redis_client.exists(k.result("a0" if k is ka else "b0"))]
    assert len(finished) == 1
    worker_factory([queue, other_queue])
    wait_results(redis_client, ka, [f"a{i}" for i in range(4)])
    wait_results(redis_client, kb, [f"b{i}" for i in range(4)])
    for keys in (ka, kb):
        assert_drained(redis_client, keys.stream)


def test_cancelled_request_never_reaches_the_handler(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    # "poison" would fail loudly if the handler saw it: a cancelled request must not run.
    redis_client.set(keys.cancel("c1"), 1, px=60_000)
    add_atomically(
        redis_client,
        keys.stream,
        [{"id": "c1", "payload": pack("poison")}, {"id": "c2", "payload": pack("fine")}],
    )
    worker_factory([queue], "helpers.handlers:poison")
    results = wait_results(redis_client, keys, ["c1", "c2"])
    assert text(results["c1"])["status"] == "cancelled"
    assert text(results["c2"])["status"] == "ok"
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        try:
            producer.get_result(queue, "c1")
        except RequestCancelled as exc:
            assert "cancelled before it ran" in str(exc)
        else:
            raise AssertionError("a cancelled request must not have a value")
    assert_drained(redis_client, keys.stream)


def test_redelivered_request_runs_alone_and_neighbours_go_back(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    """After a crash every request of the batch comes back at attempt 2; each then runs in
    a batch of its own, so a payload that kills its worker cannot take the others along."""
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    entries = [{"id": "s0", "attempt": 2, "payload": pack("suspect")}]
    entries += [{"id": f"n{i}", "payload": pack(i)} for i in range(5)]
    add_atomically(redis_client, keys.stream, entries)
    worker_factory([queue], "helpers.handlers:batch_size")
    results = wait_results(redis_client, keys, ["s0"] + [f"n{i}" for i in range(5)])
    suspect = text(results["s0"])
    assert suspect["status"] == "ok"
    assert suspect["batch"] == "1"
    assert msgpack.unpackb(results["s0"][b"payload"]) == 1
    assert suspect["attempt"] == "2"
    # The neighbours were handed back (same attempt) and ran together afterwards.
    assert {text(results[f"n{i}"])["attempt"] for i in range(5)} == {"1"}
    assert {text(results[f"n{i}"])["status"] for i in range(5)} == {"ok"}
    assert_drained(redis_client, keys.stream)


def test_drain_timeout_ends_a_batch_that_outlives_it(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    """Seed 002's three phases: stop requested (draining), grace (drain_timeout), then the
    process ends itself; the batch stays pending for the scheduler."""
    keys = KeySpace(namespace).queue(queue)
    worker = wait_serving(
        worker_factory(
            [queue], "helpers.handlers:hang_on", "--drain-timeout", "1", "--heartbeat-ttl", "2"
        )
    )
    worker.expected_exit = EXIT_DRAIN_TIMEOUT
    redis_client.xadd(keys.stream, {"id": "d1", "payload": pack("hang")})
    wait_until(lambda: redis_client.xpending(keys.stream, "workers")["pending"] == 1, what="read")
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=WAIT_S) == EXIT_DRAIN_TIMEOUT
    assert time.monotonic() - began < 10
    assert "drain_timeout" in worker.log()
    assert redis_client.xpending(keys.stream, "workers")["pending"] == 1
    redis_client.delete(keys.stream)


def test_second_signal_exits_at_once(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = wait_serving(worker_factory([queue], "helpers.handlers:hang_on"))
    worker.expected_exit = EXIT_INTERRUPTED
    redis_client.xadd(keys.stream, {"id": "s1", "payload": pack("hang")})
    wait_until(lambda: redis_client.xpending(keys.stream, "workers")["pending"] == 1, what="read")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: redis_client.hget(keys.worker(worker.name), "state") == b"draining"
               or worker.proc.poll() is not None, what="draining")  # fmt: skip
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=WAIT_S) == EXIT_INTERRUPTED
    assert time.monotonic() - began < 5
    assert "second signal" in worker.log()
    redis_client.delete(keys.stream)
