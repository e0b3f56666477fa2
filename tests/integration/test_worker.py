"""The worker through real processes: batching, isolation, bad input, stops, the wire contract.

Requests are added either through a Producer or by hand (XADD with contract fields), and
outcomes are read back from Redis exactly as redis-cli users and other-language producers
would see them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import msgpack
import pytest
import redis

from helpers.entries import add_atomically, id_entries, now_ms, pack, text, wait_results
from helpers.workers import WorkerFactory, assert_drained, wait_serving, wait_until
from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.errors import RequestDead, RequestExpired
from redbatch.protocol.fields import decode_reply
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.streams import ensure_queue

# Bound of every wait for an outcome: generous, only reached when something is broken.
WAIT_S = 30.0


def result_keys(client: redis.Redis, keys: QueueKeys) -> list[bytes]:
    return list(client.scan_iter(match=keys.result("*"), count=1000))


# -- sharing a queue ----------------------------------------------------------------------


def test_two_workers_answer_each_request_exactly_once(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    a = wait_serving(worker_factory([queue], "helpers.handlers:pid"))
    b = wait_serving(worker_factory([queue], "helpers.handlers:pid"))
    count = 2000
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        pids = producer.map(queue, list(range(count)), timeout=60)
        assert len(pids) == count
        assert set(pids) <= {a.proc.pid, b.proc.pid}
        # Both workers took part (each was blocked on the group before the first XADD).
        assert set(pids) == {a.proc.pid, b.proc.pid}
        assert redis_client.llen(keys.reply(producer.id)) == 0
    found = result_keys(redis_client, keys)
    assert len(found) == count
    pipe = redis_client.pipeline(transaction=False)
    for key in found:
        pipe.hget(key, "worker")
    assert set(pipe.execute()) == {a.name.encode(), b.name.encode()}
    # Exactly-once execution: the two workers' own counts add up to the number of requests.
    assert a.stop() == 0
    assert b.stop() == 0
    items = [
        int(m)
        for w in (a, b)
        for m in re.findall(r"stopped after \d+ batches, (\d+) items", w.log())
    ]
    assert len(items) == 2
    assert sum(items) == count
    assert_drained(redis_client, keys.stream)


# -- the wire contract by hand ------------------------------------------------------------


def redis_cli(server: EmbeddedRedis, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    return done.stdout


def test_json_request_through_redis_cli(
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    redis_cli(
        redis_server, "XADD", keys.stream, "*", "id", "r1", "ct", "json", "payload", '{"x": 1}'
    )
    redis_cli(
        redis_server, "XADD", keys.stream, "*", "id", "r2", "ct", "json", "payload", "{not json"
    )
    worker_factory([queue])
    wait_results(redis_client, keys, ["r1", "r2"])

    lines = redis_cli(redis_server, "--no-raw", "HGETALL", keys.result("r1")).splitlines()
    # --no-raw prints `1) "field"` lines; pair them up after stripping numbering and quotes.
    values = [json.loads(line.split(") ", 1)[1]) for line in lines]
    result = dict(zip(values[::2], values[1::2], strict=True))
    assert result["status"] == "ok"
    assert result["ct"] == "json"
    assert json.loads(result["payload"]) == {"x": 1}
    assert result["batch"] == "2"

    bad = text(redis_client.hgetall(keys.result("r2")))
    assert bad["status"] == "dead"
    assert "json" in bad["error"]
    assert "payload" not in bad
    dead = redis_client.xrange(keys.dead)
    assert len(dead) == 1
    entry = text(dead[0][1])
    assert entry["id"] == "r2"
    assert entry["payload"] == "{not json"
    assert entry["reason"] == bad["error"]
    assert_drained(redis_client, keys.stream)


# -- batching (seed 000) ------------------------------------------------------------------


def test_burst_of_exactly_batch_size_runs_at_once(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory(
        [queue], "redbatch.handlers:echo", "--max-batch-size", "8", "--max-wait-ms", "5000"
    )
    wait_serving(worker)
    ids = [f"b{i}" for i in range(8)]
    began = time.monotonic()
    add_atomically(redis_client, keys.stream, id_entries(ids))
    # Well before the 5 s window: a full batch must not wait for the window to close.
    results = wait_results(redis_client, keys, ids, timeout=2.5)
    assert time.monotonic() - began < 2.5
    for request_id, fields in results.items():
        assert fields[b"status"] == b"ok"
        assert msgpack.unpackb(fields[b"payload"]) == request_id
        assert fields[b"batch"] == b"8"
    assert_drained(redis_client, keys.stream)


def test_partial_batch_runs_when_window_expires(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory(
        [queue], "redbatch.handlers:echo", "--max-batch-size", "8", "--max-wait-ms", "300"
    )
    wait_serving(worker)
    ids = ["p0", "p1", "p2"]
    add_atomically(redis_client, keys.stream, id_entries(ids))
    results = wait_results(redis_client, keys, ids, timeout=10)
    assert {f[b"status"] for f in results.values()} == {b"ok"}
    assert {f[b"batch"] for f in results.values()} == {b"3"}
    assert_drained(redis_client, keys.stream)


# -- deadlines ----------------------------------------------------------------------------


def test_expired_entry_is_never_run(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    redis_client.xadd(
        keys.stream, {"id": "old", "deadline": now_ms() - 1000, "payload": pack("poison")}
    )
    worker_factory([queue], "helpers.handlers:poison")
    result = text(wait_results(redis_client, keys, ["old"])["old"])
    # The poison handler would have made it `error`: `expired` proves it never ran.
    assert result["status"] == "expired"
    assert "deadline" in result["error"]
    assert_drained(redis_client, keys.stream)


def test_producer_deadline_passes_before_any_worker(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        # The timeout bounds the admission too (a first connect and script load): 0.5 s, not
        # 0.05, so a loaded machine still admits it before it is late.
        handle = producer.submit(queue, "late", timeout=0.5)
        time.sleep(0.6)  # not synchronisation: the deadline itself must pass
        worker_factory([queue])
        with pytest.raises(RequestExpired):
            handle.result(timeout=WAIT_S)
    assert_drained(redis_client, KeySpace(namespace).queue(queue).stream)


# -- handler failures ---------------------------------------------------------------------


def test_handler_error_fails_only_the_poisoned_item(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    ids = [f"i{n}" for n in range(32)]
    payloads = {i: ("poison" if i == "i13" else i) for i in ids}
    add_atomically(
        redis_client, keys.stream, [{"id": i, "payload": pack(payloads[i])} for i in ids]
    )
    worker_factory([queue], "helpers.handlers:poison", "--max-batch-size", "32")
    results = {i: text(f) for i, f in wait_results(redis_client, keys, ids).items()}
    errors = {i: r for i, r in results.items() if r["status"] != "ok"}
    assert list(errors) == ["i13"]
    assert errors["i13"]["status"] == "error"
    assert errors["i13"]["error"] == "ValueError: poison payload"
    for request_id, result in results.items():
        assert result["batch"] == "32"
        if request_id != "i13":
            assert (
                msgpack.unpackb(redis_client.hget(keys.result(request_id), "payload")) == request_id
            )
    assert_drained(redis_client, keys.stream)


def test_wrong_length_handler_fails_the_whole_batch(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    ids = ["w0", "w1", "w2", "w3"]
    add_atomically(redis_client, keys.stream, id_entries(ids))
    worker_factory([queue], "helpers.handlers:wrong_length", "--max-batch-size", "4")
    results = [text(f) for f in wait_results(redis_client, keys, ids).values()]
    for result in results:
        assert result["status"] == "error"
        assert result["error"].startswith("HandlerContractError: ")
        assert "returned 3 results for 4 payloads" in result["error"]
        assert result["batch"] == "4"
    assert_drained(redis_client, keys.stream)


# -- bad input ----------------------------------------------------------------------------


def test_malformed_entries_are_dead_lettered_and_worker_keeps_serving(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory([queue])
    wait_serving(worker)
    add_atomically(
        redis_client,
        keys.stream,
        [
            {"payload": pack("no id"), "reply": "pX"},
            {"id": "m2", "reply": "pX"},
            {"id": "m3", "reply": "pX", "attempt": "x", "payload": pack("bad attempt")},
        ],
    )

    def dead_letters() -> list[Any] | None:
        entries = redis_client.xrange(keys.dead)
        return entries if len(entries) == 3 else None

    dead = wait_until(dead_letters, what="3 dead letters")
    reasons = {text(fields).get("id", ""): text(fields)["reason"] for _, fields in dead}
    assert set(reasons) == {"", "m2", "m3"}
    assert "'id'" in reasons[""]
    assert "'payload'" in reasons["m2"]
    assert "'attempt'" in reasons["m3"]

    results = {i: text(f) for i, f in wait_results(redis_client, keys, ["m2", "m3"]).items()}
    for request_id, result in results.items():
        assert result["status"] == "dead"
        assert result["error"] == reasons[request_id]
    # The producer named in `reply` is told too (one reply each, nothing for the id-less one).
    replies = [decode_reply(r) for r in redis_client.lrange(keys.reply("pX"), 0, -1)]
    assert sorted((r.id, r.status) for r in replies) == [("m2", "dead"), ("m3", "dead")]

    with Producer.from_url(redis_url, namespace=namespace) as producer:
        for request_id in ("m2", "m3"):
            with pytest.raises(RequestDead) as raised:
                producer.get_result(queue, request_id)
            assert raised.value.reason == reasons[request_id]
        assert producer.call(queue, "still serving", timeout=WAIT_S) == "still serving"
    assert worker.proc.poll() is None
    assert_drained(redis_client, keys.stream)


@pytest.mark.parametrize("removed", ["stream", "group"])
def test_stream_or_group_deleted_under_running_worker(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
    removed: str,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    worker = worker_factory([queue])
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "before", timeout=WAIT_S) == "before"
        # Most likely while the worker is blocked in XREADGROUP (it idles there).
        if removed == "stream":
            assert redis_client.delete(keys.stream) == 1
        else:
            assert redis_client.xgroup_destroy(keys.stream, "workers") == 1
        began = time.monotonic()
        assert producer.call(queue, "after", timeout=WAIT_S) == "after"
        assert time.monotonic() - began < 10
        assert producer.call(queue, "again", timeout=WAIT_S) == "again"
    assert worker.proc.poll() is None
    # One line says what happened: no traceback, no error-level noise.
    log = worker.log()
    assert len([line for line in log.splitlines() if "recreating" in line]) == 1, log
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    assert_drained(redis_client, keys.stream)


# -- outcomes -----------------------------------------------------------------------------


def test_first_outcome_wins(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: WorkerFactory
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    redis_client.hset(keys.result("r1"), mapping={"status": "ok", "payload": pack("first")})
    redis_client.xadd(keys.stream, {"id": "r1", "reply": "pX", "payload": pack("second")})
    worker_factory([queue])
    popped = redis_client.blpop([keys.reply("pX")], timeout=WAIT_S)
    assert popped is not None
    outcome = decode_reply(popped[1])
    assert (outcome.id, outcome.status) == ("r1", "ok")
    assert msgpack.unpackb(outcome.body) == "first"
    assert msgpack.unpackb(redis_client.hget(keys.result("r1"), "payload")) == "first"
    assert redis_client.hget(keys.result("r1"), "worker") is None  # never overwritten
    assert_drained(redis_client, keys.stream)


@pytest.mark.parametrize(("extra", "ttl_s"), [((), 3600), (("--result-ttl", "5"), 5)])
def test_results_and_replies_expire(
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
    extra: tuple[str, ...],
    ttl_s: int,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    ensure_queue(redis_client, KeySpace(namespace), keys)
    redis_client.xadd(keys.stream, {"id": "t1", "reply": "pX", "payload": pack(1)})
    worker_factory([queue], "redbatch.handlers:echo", *extra)
    wait_results(redis_client, keys, ["t1"])
    for key in (keys.result("t1"), keys.reply("pX")):
        pttl = redis_client.pttl(key)
        assert 0 < pttl <= ttl_s * 1000, (key, pttl)
    assert_drained(redis_client, keys.stream)


# -- stopping (seed 000) ------------------------------------------------------------------


def test_graceful_stop_strands_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = KeySpace(namespace).queue(queue)
    a = worker_factory(
        [queue],
        "redbatch.handlers:sleep",
        "--handler-option",
        "seconds=0.3",
        "--max-batch-size",
        "4",
    )
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [producer.submit(queue, n) for n in range(40)]
        wait_until(lambda: any(h.done() for h in handles), what="a first result")
        assert a.stop() == 0
        # What A took, it answered: nothing is left pending for a scheduler to rescue.
        assert redis_client.xpending(keys.stream, "workers")["pending"] == 0
        answered_by_a = sum(h.done() for h in handles)
        assert 0 < answered_by_a < 40
        b = worker_factory([queue])
        assert [h.result(timeout=WAIT_S) for h in handles] == list(range(40))
    workers = {redis_client.hget(keys.result(h.id), "worker") for h in handles}
    assert workers == {a.name.encode(), b.name.encode()}
    assert_drained(redis_client, keys.stream)
