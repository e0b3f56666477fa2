"""Two namespaces on one Redis, with the same queue name, never see each other's queues,
results, workers or dead letters; the scheduler of one never touches the other's keys."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgpack
import redis

from helpers.cli import run_json
from helpers.entries import queue_keys
from helpers.schedulers import start_scheduler, wait_running
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys

WAIT_S = 30.0
REQUESTS = 50


def _namespace() -> str:
    return "n" + uuid.uuid4().hex[:10]


def _tagging_worker(redis_url: str, namespace: str, queue: str, log_dir: Path) -> WorkerProcess:
    """A worker answering ``[namespace, payload]``: a result shows which namespace ran it."""
    return wait_serving(
        start_worker(
            redis_url,
            namespace,
            [queue],
            log_dir=str(log_dir),
            handler="helpers.handlers:tag",
            extra=("--handler-option", f"label={namespace}"),
        )
    )


def test_same_queue_in_two_namespaces_keeps_requests_results_and_workers_apart(
    redis_url: str, redis_client: redis.Redis, queue: str, tmp_path: Path
) -> None:
    first, second = _namespace(), _namespace()
    queue_keys(redis_client, second, "only-second")  # a queue the first must not list
    workers = [_tagging_worker(redis_url, ns, queue, tmp_path) for ns in (first, second)]
    try:
        with (
            Producer.from_url(redis_url, namespace=first) as one,
            Producer.from_url(redis_url, namespace=second) as two,
        ):
            # Interleaved submits with the same request ids in both namespaces.
            handles = [
                (ns, producer.submit(queue, i, id=f"same-{i}"))
                for i in range(REQUESTS)
                for ns, producer in ((first, one), (second, two))
            ]
            for ns, handle in handles:
                assert handle.result(timeout=WAIT_S)[0] == ns
            assert one.get_result(queue, "same-0") == [first, 0]
            assert two.get_result(queue, "same-0") == [second, 0]

        for ns, worker in zip((first, second), workers, strict=True):
            status = run_json("status", "--redis-url", redis_url, "--namespace", ns)
            expected = [queue] if ns == first else sorted([queue, "only-second"])
            assert sorted(q["name"] for q in status["queues"]) == expected
            assert [w["name"] for w in status["workers"]] == [worker.name]
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log()
    for ns in (first, second):
        assert all(k.decode().startswith(f"{ns}:") for k in redis_client.scan_iter(f"{ns}*"))


def _ghost_holds_one(client: redis.Redis, keys: QueueKeys) -> bytes:
    """A request read by consumer "ghost", which has no heartbeat: a dead worker's entry."""
    client.xadd(keys.stream, build_entry("r1", msgpack.packb(1), attempt=1))  # type: ignore[arg-type]
    reply = client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=1)
    entry_id: bytes = reply[0][1][0][0]
    return entry_id


def _snapshot(client: redis.Redis, namespace: str) -> dict[bytes, bytes | None]:
    """Every key of ``namespace`` with its serialized value (DUMP): any change shows."""
    return {key: client.dump(key) for key in client.scan_iter(f"{namespace}:*")}


def test_scheduler_of_one_namespace_never_touches_another(
    redis_url: str, redis_client: redis.Redis, queue: str, tmp_path: Path
) -> None:
    mine, other = _namespace(), _namespace()
    my_keys = queue_keys(redis_client, mine, queue)
    other_keys = queue_keys(redis_client, other, queue)
    # The same work waits in both: a dead worker's entry, and a due delayed member (one that
    # cannot be read, which the scheduler dead-letters).
    _ghost_holds_one(redis_client, my_keys)
    _ghost_holds_one(redis_client, other_keys)
    for keys in (my_keys, other_keys):
        redis_client.zadd(keys.delayed, {b"not-a-valid-member": 0})
    before = _snapshot(redis_client, other)
    assert before  # the other namespace has keys to protect

    scheduler = wait_running(start_scheduler(redis_url, mine, log_dir=str(tmp_path)))
    try:
        # Once the scheduler acted on its own namespace, a pass over every queue it sees is done.
        wait_until(
            lambda: (
                redis_client.xpending(my_keys.stream, GROUP)["pending"] == 0
                and redis_client.zcard(my_keys.delayed) == 0
            ),
            WAIT_S,
            "the scheduler re-queued and cleared its own namespace's work",
        )
    finally:
        assert scheduler.stop() == 0, scheduler.log()
    assert _snapshot(redis_client, other) == before
    assert redis_client.xpending(other_keys.stream, GROUP)["pending"] == 1
    assert other not in scheduler.log()
    assert KeySpace(other).queues.encode() in before
    assert redis_client.xlen(my_keys.dead) == 1 and redis_client.xlen(other_keys.dead) == 0
