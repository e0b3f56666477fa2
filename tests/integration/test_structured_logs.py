"""``--log-format json`` of real worker and scheduler processes: every record of ours carries
an ``event`` name and the fields of what it is about (queue, worker, batch, request ids)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import redis

from helpers.entries import queue_keys
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer, RequestFailed
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP

Factory = Callable[..., WorkerProcess]
WAIT_S = 30.0


def records(process: WorkerProcess) -> list[dict[str, Any]]:
    """Every line of the process's log as JSON (a line that is not JSON fails here)."""
    return [json.loads(line) for line in process.log().splitlines() if line.strip()]


def ours(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"].startswith("redbatch")]


def test_worker_records_carry_event_worker_batch_and_request_ids(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    worker = wait_serving(
        worker_factory(
            [queue], "helpers.handlers:poison", "--log-format", "json", "--log-level", "DEBUG"
        )
    )
    ids = [f"slog-{i}" for i in range(3)]
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        for request_id in ids:
            assert producer.submit(queue, request_id, id=request_id).result(WAIT_S) == request_id
        with pytest.raises(RequestFailed):
            producer.submit(queue, "poison", id="slog-poison").result(WAIT_S)
    assert worker.stop() == 0

    lines = ours(records(worker))
    assert lines
    for line in lines:
        assert isinstance(line.get("event"), str) and line["event"], line
        assert line["worker"] == worker.name, line
    events = [line["event"] for line in lines]
    assert events[0] == "worker_serving" and events[-1] == "worker_stopped"

    done = [line for line in lines if line["event"] == "batch_done"]
    assert sorted(i for line in done for i in line["request_ids"]) == sorted([*ids, "slog-poison"])
    for line in done:
        assert line["queue"] == queue
        assert line["batch"]["size"] == line["request_count"] == len(line["request_ids"])
        assert "trace_id" not in line  # tracing is off
    assert [line["batch"]["id"] for line in done] == list(range(1, len(done) + 1))

    failed = [line for line in lines if line["event"] == "batch_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "WARNING"
    assert failed[0]["queue"] == queue
    assert failed[0]["request_ids"] == ["slog-poison"] and failed[0]["request_count"] == 1
    assert failed[0]["error"] == "ValueError: poison payload"
    assert failed[0]["outcomes"] == {"error": 1, "retry": 0, "dead": 0}
    # The failed batch is one of the batches done, by id.
    assert failed[0]["batch"] in [line["batch"] for line in done]


def test_scheduler_requeue_record_names_the_queue_worker_and_requests(
    redis_client: redis.Redis, namespace: str, queue: str, scheduler_factory: Factory
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    # A "worker" with a heartbeat holds 3 started entries, then dies (its heartbeat goes).
    redis_client.hset(keys.worker("ghost"), mapping={"batch_timeout": 300})
    ids = [f"slog-held-{i}" for i in range(3)]
    for request_id in ids:
        redis_client.xadd(keys.stream, build_entry(request_id, msgpack.packb(1)))  # type: ignore[arg-type]
    reply = redis_client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=3)
    entry_ids = [entry_id for entry_id, _ in reply[0][1]]
    redis_client.xclaim(keys.stream, GROUP, "ghost", 0, entry_ids, justid=True, retrycount=2)
    redis_client.delete(keys.worker("ghost"))

    scheduler = scheduler_factory("--log-format", "json")

    def requeued() -> dict[str, Any] | None:
        found = [r for r in records(scheduler) if r.get("event") == "entries_requeued"]
        return found[0] if found else None

    line = wait_until(requeued, WAIT_S, "an entries_requeued record")
    assert line["queue"] == queue and line["worker"] == "ghost"
    assert line["requeued"] == 3 and line["dead_lettered"] == 0
    assert sorted(line["request_ids"]) == ids and line["request_count"] == 3
    assert line["level"] == "INFO" and line["reason"]
    assert scheduler.stop() == 0
    lines = ours(records(scheduler))
    assert all(isinstance(r.get("event"), str) for r in lines), lines
    assert lines[0]["event"] == "scheduler_started" and lines[-1]["event"] == "scheduler_stopped"
