"""The handler contract through real worker processes and a real Redis: async handlers on one
loop, the ``requests`` context, ``--path``, tensors and unencodable results."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis

from helpers import optional
from helpers.entries import add_atomically, now_ms, pack, wait_results, wait_started
from helpers.workers import WorkerFactory, WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import Producer, RequestCancelled, RequestFailed
from redbatch.embedded import EmbeddedRedis
from redbatch.producer.handle import Handle
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue

WAIT_S = 30.0


def test_an_async_handler_reuses_one_client_across_batches(
    redis_server: EmbeddedRedis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory,
) -> None:  # fmt: skip
    handler = "helpers.contract_handlers:redis_client_id"
    wait_serving(worker_factory([queue], handler, "--handler-option", f"port={redis_server.port}"))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        # One at a time: each request is a batch of its own.
        ids = [producer.submit(queue, i).result(timeout=WAIT_S) for i in range(5)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == 1, f"the async client was not reused: CLIENT IDs {ids}"


def test_a_handler_with_requests_sees_each_requests_fields(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory,
) -> None:  # fmt: skip
    wait_serving(worker_factory([queue], "helpers.contract_handlers:describe"))
    # default_timeout=None: a request without a timeout of its own has no deadline (with the
    # producer's default, it would carry that default as its deadline).
    with Producer.from_url(redis_url, namespace=namespace, default_timeout=None) as producer:
        before = now_ms()
        a = producer.submit(queue, "a", id="req-a", cost=5, timeout=60)
        b = producer.submit(queue, "b", id="req-b", priority="high")
        after = now_ms()
        seen_a, seen_b = a.result(timeout=WAIT_S), b.result(timeout=WAIT_S)
    assert seen_a["payload"] == "a"
    assert (seen_a["id"], seen_a["queue"], seen_a["attempt"], seen_a["cost"]) == (
        "req-a", queue, 1, 5,
    )  # fmt: skip
    assert before <= seen_a["enqueued_ms"] <= after
    assert before + 60_000 <= seen_a["deadline_ms"] <= after + 60_000
    assert seen_a["cancelled"] is False
    assert (seen_b["id"], seen_b["priority"], seen_b["cost"]) == ("req-b", "high", 1)
    assert seen_b["deadline_ms"] is None

    # A redelivery, written by hand as another-language producer or the scheduler would.
    keys = KeySpace(namespace).queue(queue)
    enq = now_ms()
    fields = {"id": "req-c", "attempt": 3, "cost": 2, "enq": enq, "payload": pack("c")}
    add_atomically(redis_client, keys.stream, [fields])
    result = wait_results(redis_client, keys, ["req-c"])["req-c"]
    seen_c = msgpack.unpackb(result[b"payload"])
    assert (seen_c["id"], seen_c["attempt"], seen_c["cost"], seen_c["enqueued_ms"]) == (
        "req-c", 3, 2, enq,
    )  # fmt: skip


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An application directory with a handler module of a unique name."""
    app = tmp_path / "app"
    app.mkdir()
    module = f"app_model_{uuid.uuid4().hex[:8]}"
    (app / f"{module}.py").write_text(
        "import os\n\n\ndef where(payloads):\n"
        "    return [os.path.basename(__file__)] * len(payloads)\n"
    )
    yield app, module


def test_a_plain_handler_sees_a_cancel_that_arrives_while_it_runs(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory,
) -> None:  # fmt: skip
    wait_serving(worker_factory([queue], "helpers.contract_handlers:until_one_is_cancelled"))
    stream = KeySpace(namespace).queue(queue).stream
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        stay, go = producer.submit_many(queue, ["stay", "go"], timeout=60)  # one batch
        wait_started(redis_client, stream, 2)
        go.cancel()
        # The handler returns once it sees the cancel (it would wait 20 s otherwise); a
        # running request keeps its outcome.
        assert go.result(timeout=WAIT_S) is True
        assert stay.result(timeout=WAIT_S) is False


@pytest.mark.parametrize("by", ["--path", "working directory"])
def test_a_handler_module_imports_from_the_application_directory(
    redis_url: str, namespace: str, queue: str, tmp_path: Path, app_dir: tuple[Path, str],
    by: str,
) -> None:  # fmt: skip
    app, module = app_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -P: the interpreter leaves the working directory off sys.path, as the installed
    # `redbatch` script does; only --path (or its default, ".") can put it there.
    cwd, extra = (elsewhere, ("--path", str(app))) if by == "--path" else (app, ())
    worker = start_worker(
        redis_url, namespace, [queue], log_dir=str(tmp_path), handler=f"{module}:where",
        extra=extra, cwd=str(cwd), python_options=("-P",),
    )  # fmt: skip
    try:
        wait_serving(worker)
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            assert producer.submit(queue, 1).result(timeout=WAIT_S) == f"{module}.py"
    finally:
        assert worker.stop() == 0, worker.log()


def test_without_path_a_module_elsewhere_is_one_clear_error(
    redis_url: str, namespace: str, queue: str, tmp_path: Path, app_dir: tuple[Path, str]
) -> None:
    _, module = app_dir
    worker = start_worker(
        redis_url, namespace, [queue], log_dir=str(tmp_path), handler=f"{module}:where",
        cwd=str(tmp_path), python_options=("-P",),
    )  # fmt: skip
    assert worker.proc.wait(WAIT_S) == 2
    assert f"cannot import handler '{module}:where': ModuleNotFoundError" in worker.log()
    assert "Traceback" not in worker.log()


def test_torch_tensors_arrive_as_numpy_arrays(
    redis_url: str, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    optional.torch()
    wait_serving(worker_factory([queue], "helpers.contract_handlers:tensors"))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        results = producer.map(queue, [1.5, -2.0], timeout=WAIT_S)
    assert isinstance(results[0]["f32"], np.ndarray)
    assert results[0]["f32"].dtype == np.float32
    assert [r["f32"].tolist() for r in results] == [[1.5, 3.0], [-2.0, -4.0]]
    assert results[1]["bf16"].dtype == np.float32  # numpy has no bfloat16
    assert results[1]["bf16"].tolist() == [-2.0]


def test_an_unencodable_result_fails_alone(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory,
) -> None:  # fmt: skip
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    entries = [{"id": f"r{i}", "payload": pack(p)} for i, p in enumerate(["a", "set", "b"])]
    # Added before the worker starts: its first read takes all three as one batch.
    add_atomically(redis_client, keys.stream, entries)
    worker_factory([queue], "helpers.contract_handlers:unencodable_when_asked")
    results = wait_results(redis_client, keys, ["r0", "r1", "r2"])
    assert {k: v[b"batch"] for k, v in results.items()} == {"r0": b"3", "r1": b"3", "r2": b"3"}
    assert [results[k][b"status"] for k in ("r0", "r1", "r2")] == [b"ok", b"error", b"ok"]
    assert msgpack.unpackb(results["r2"][b"payload"]) == "b"
    error = results["r1"][b"error"].decode()
    assert error.startswith("PayloadError: result:"), error
    assert "type set" in error

    # A producer sees the same: a RequestFailed naming the type, its batchmates' results.
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = producer.submit_many(queue, ["x", "set"], timeout=WAIT_S)
        assert handles[0].result(timeout=WAIT_S) == "x"
        with pytest.raises(RequestFailed, match="cannot serialize object of type set"):
            handles[1].result(timeout=WAIT_S)


def test_a_request_cancelled_while_the_batch_before_runs_ends_cancelled(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory, tmp_path: Path,
) -> None:  # fmt: skip
    """Batch N+1, read ahead while N runs, has its cancel keys checked then; when N ends the
    handler thread marks it started and runs it without waiting for the mark's second
    check. A request cancelled between the two checks reaches the handler, and still ends
    ``cancelled`` (wire contract, "Cancellation")."""
    log, release = tmp_path / "seen.jsonl", tmp_path / "release"
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        _, held, victim = _hold_and_follow(
            redis_client, producer, worker_factory, queue, keys, log, release, "victim"
        )
        victim.cancel()
        release.touch()
        assert held.result(timeout=WAIT_S) == "hold"
        with pytest.raises(RequestCancelled):
            victim.result(timeout=WAIT_S)
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen == ["hold", "victim"]  # given to the handler: cancelled after its check
    stored = redis_client.hgetall(keys.result(victim.id))
    assert stored[b"status"] == b"cancelled" and b"payload" not in stored


def test_a_stop_while_the_batch_before_runs_hands_the_next_back_unstarted(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str,
    worker_factory: WorkerFactory, tmp_path: Path,
) -> None:  # fmt: skip
    """Batch N+1 was given to the handler thread to start when N ends; a stop came first:
    N ends and is answered, N+1 is never started (its attempt not counted) and goes back to
    the stream, where the next worker runs it."""
    log, release = tmp_path / "seen.jsonl", tmp_path / "release"
    keys = KeySpace(namespace).queue(queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        first, held, following = _hold_and_follow(
            redis_client, producer, worker_factory, queue, keys, log, release, "next"
        )
        first.proc.send_signal(signal.SIGTERM)
        # The heartbeat thread says so once the stop is set, while N still runs.
        wait_until(lambda: "finishing the running batch" in first.log(), WAIT_S, "the stop")
        release.touch()
        assert first.proc.wait(timeout=WAIT_S) == 0
        assert held.result(timeout=WAIT_S) == "hold"
        assert "handed 1 unstarted entries back" in first.log()
        assert [json.loads(line) for line in log.read_text().splitlines()] == ["hold"]
        worker_factory([queue])
        assert following.result(timeout=WAIT_S) == "next"
    assert redis_client.hget(keys.result(following.id), "attempt") == b"1"


def _hold_and_follow(
    client: redis.Redis, producer: Producer, worker_factory: WorkerFactory, queue: str,
    keys: QueueKeys, log: Path, release: Path, following: str,
) -> tuple[WorkerProcess, Handle, Handle]:  # fmt: skip
    """A worker of batches of one runs "hold" until ``release`` exists; ``following`` is
    read ahead meanwhile and has had its early cancel check (the ``MGET`` after the mark's)."""
    worker = worker_factory(
        [queue], "helpers.handlers:record_and_hold", "--max-batch-size", "1",
        "--handler-option", f"log={log}", "--handler-option", f"release={release}",
    )  # fmt: skip
    held = producer.submit(queue, "hold", timeout=60)
    wait_started(client, keys.stream, 1)
    checks = _mget_calls(client)  # the started mark's check of "hold" is in
    second = producer.submit(queue, following, timeout=60)
    wait_until(lambda: _mget_calls(client) > checks, WAIT_S, "the early check")
    return worker, held, second


def _mget_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))
