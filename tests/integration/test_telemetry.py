"""Telemetry of real worker and scheduler processes: Prometheus endpoints scraped over HTTP,
statistics slot hashes in Redis, JSON log lines, a metrics port that is already taken."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import msgpack
import pytest
import redis

from helpers import subprocess_env
from helpers.entries import queue_keys
from helpers.metrics import Samples, free_port, scrape, try_scrape, value
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer, RequestFailed
from redbatch.protocol import stats
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP, QueueKeys
from redbatch.protocol.scripts import delayed_member

Factory = Callable[..., WorkerProcess]
POISON = "helpers.handlers:poison"
WAIT_S = 30.0  # far above the second or two any of these needs
RUN_TIMEOUT_S = 60.0


def moved(port: int, before: Samples, name: str, by: float, **labels: str) -> Samples:
    """Wait until ``name{labels}`` has grown by at least ``by`` since ``before`` (the worker
    counts a batch just after writing its results, so a producer may see them first)."""

    def grown() -> Samples | None:
        now = scrape(port)
        return now if value(now, name, **labels) - value(before, name, **labels) >= by else None

    found: Samples = wait_until(grown, WAIT_S, f"{name}{labels} += {by}")
    return found


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def window(client: redis.Redis, keys: QueueKeys) -> stats.Counts:
    """The queue's statistics of the last minute, as ``redbatch status`` reads them."""
    slots = stats.window_slots(time.time())
    return stats.merge(client.hgetall(keys.stats(slot)) for slot in slots)


# -- the worker -----------------------------------------------------------------------------------


def test_worker_endpoint_and_stats_count_exactly_what_it_ran(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    port = free_port()
    worker = wait_serving(worker_factory([queue], POISON, "--metrics-port", str(port)))
    keys = queue_keys(redis_client, namespace, queue)
    before = scrape(port)
    q = {"queue": queue}
    assert ("redbatch_requests_total", (("outcome", "ok"), ("queue", queue))) in before
    n = 40
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.map(queue, list(range(n)), timeout=30) == list(range(n))
        with pytest.raises(RequestFailed, match="poison payload"):
            producer.call(queue, "poison", timeout=30)

    after = moved(port, before, "redbatch_requests_total", 1, outcome="error", **q)
    after = moved(port, before, "redbatch_requests_total", n, outcome="ok", **q)
    assert delta(after, before, "redbatch_requests_total", outcome="ok", **q) == n
    assert delta(after, before, "redbatch_requests_total", outcome="error", **q) == 1
    assert delta(after, before, "redbatch_requests_total", outcome="dead", **q) == 0
    batches = delta(after, before, "redbatch_batch_size_count", **q)
    assert batches >= 2  # the poison came after the others: a batch of its own at least
    assert delta(after, before, "redbatch_batch_size_sum", **q) == n + 1
    assert delta(after, before, "redbatch_handler_seconds_count", **q) == batches
    assert delta(after, before, "redbatch_queue_wait_seconds_count", **q) == n + 1
    busy = delta(after, before, "redbatch_handler_busy_seconds_total", **q)
    assert busy == pytest.approx(delta(after, before, "redbatch_handler_seconds_sum", **q))
    assert busy > 0
    assert value(after, "redbatch_items_in_flight", **q) == 0
    assert 0 <= value(after, "redbatch_worker_busy_ratio") <= 1

    # The heartbeat thread adds the same counts to this slot's hash within about a second.
    counts = wait_until(
        lambda: (c := window(redis_client, keys)).items == n + 1 and c, WAIT_S, "stats items"
    )
    assert counts.outcomes == {"ok": n, "error": 1}
    assert counts.batches == batches
    assert sum(counts.wait.values()) == n + 1
    slot_key = keys.stats(stats.slot_of(time.time()))
    assert redis_client.ttl(slot_key) in range(-2, stats.TTL_S + 1)  # -2: the slot just turned
    heartbeat = keys.worker(worker.name)
    wait_until(lambda: redis_client.hget(heartbeat, "busy") == b"0", WAIT_S, "busy 0 when idle")
    assert redis_client.hget(heartbeat, "state") == b"serving"


def test_a_malformed_entry_counts_as_dead_without_a_handler_run(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    port = free_port()
    wait_serving(worker_factory([queue], "redbatch.handlers:echo", "--metrics-port", str(port)))
    keys = queue_keys(redis_client, namespace, queue)
    before = scrape(port)
    redis_client.xadd(keys.stream, {"id": "no-payload"})  # breaks the wire contract
    after = moved(port, before, "redbatch_requests_total", 1, outcome="dead", queue=queue)
    assert delta(after, before, "redbatch_handler_seconds_count", queue=queue) == 0
    assert redis_client.xlen(keys.dead) == 1
    counts = wait_until(lambda: (c := window(redis_client, keys)).items and c, WAIT_S, "stats")
    assert (counts.items, counts.batches, counts.outcomes) == (1, 0, {"dead": 1})


def test_worker_json_logs_one_object_per_line_and_nothing_per_request(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    worker = wait_serving(worker_factory([queue], POISON, "--log-format", "json"))
    ids = [f"telemetry-req-{i}" for i in range(5)]
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        for request_id in ids:
            assert producer.submit(queue, request_id, id=request_id).result(30) == request_id
        with pytest.raises(RequestFailed):
            producer.call(queue, "poison", timeout=30)
    assert worker.stop() == 0

    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    messages = [line["msg"] for line in lines]
    start = [m for m in messages if m.startswith(f"worker {worker.name} serving")]
    assert len(start) == 1
    assert "log_format=json" in start[0] and "max_batch_size=32" in start[0]
    failed = [line for line in lines if "poison payload" in line["msg"]]
    assert [f["level"] for f in failed] == ["WARNING"]  # one line for the failed batch
    assert any("draining" in m for m in messages)
    assert any(m.startswith(f"worker {worker.name} stopped after") for m in messages)
    assert not any(request_id in worker.log() for request_id in ids)


def test_a_metrics_port_in_use_exits_2_with_one_line(redis_url: str, queue: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (
            ["worker", queue, "--handler", "redbatch.handlers:echo"],
            ["scheduler"],
        ):
            result = subprocess.run(
                [sys.executable, "-m", "redbatch", *command, "--redis-url", redis_url,
                 "--metrics-port", str(port)],
                env=subprocess_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                check=False,
            )  # fmt: skip
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"redbatch: error: cannot serve metrics on port {port}")
            assert "--metrics-port" in lines[0]


# -- the scheduler --------------------------------------------------------------------------------


def take_started(client: redis.Redis, keys: QueueKeys, consumer: str, n: int) -> None:
    """Read ``n`` new entries as ``consumer`` and mark them started, as a worker does."""
    reply = client.xreadgroup(GROUP, consumer, {keys.stream: ">"}, count=n)
    entry_ids = [entry_id for entry_id, _ in reply[0][1]]
    assert len(entry_ids) == n
    client.xclaim(keys.stream, GROUP, consumer, 0, entry_ids, justid=True, retrycount=2)


def add(client: redis.Redis, keys: QueueKeys, n: int, tag: str, attempt: int = 1) -> None:
    for i in range(n):
        fields = build_entry(f"{tag}{i}", msgpack.packb(i), attempt=attempt)
        client.xadd(keys.stream, fields)  # type: ignore[arg-type]


def test_scheduler_endpoint_shows_depths_and_what_it_moved(
    redis_client: redis.Redis, namespace: str, queue: str, scheduler_factory: Factory
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    port = free_port()
    scheduler_factory("--metrics-port", str(port), "--max-attempts", "3")
    q = {"queue": queue}
    normal = {"queue": queue, "lane": "normal"}
    first = wait_until(
        lambda: (s := try_scrape(port)) and ("redbatch_queue_waiting", (("lane", "normal"),
                 ("queue", queue))) in s and s, WAIT_S, "the first pass's gauges",
    )  # fmt: skip
    assert value(first, "redbatch_queue_waiting", **normal) == 0
    assert value(first, "redbatch_dead_letters", **q) == 0
    assert ("redbatch_requeued_total", (("queue", queue), ("reason", "dead_worker"))) in first

    # A live "worker" (a heartbeat) holds 7 started entries; 2 more wait; 1 retry is delayed.
    redis_client.hset(keys.worker("ghost"), mapping={"batch_timeout": 300})
    redis_client.expire(keys.worker("ghost"), 60)
    add(redis_client, keys, 3, "last", attempt=3)  # out of attempts if their worker dies
    take_started(redis_client, keys, "ghost", 3)
    add(redis_client, keys, 4, "fresh")
    take_started(redis_client, keys, "ghost", 4)
    add(redis_client, keys, 2, "waiting")
    member = delayed_member({b"id": b"later", b"payload": b"\x01"}, 2)
    redis_client.zadd(keys.delayed, {member: time.time() * 1000 + 3_600_000})

    def depths() -> Samples | None:
        s = scrape(port)
        shown = (
            value(s, "redbatch_queue_pending", **normal),
            value(s, "redbatch_queue_waiting", **normal),
            value(s, "redbatch_queue_delayed", **q),
            value(s, "redbatch_consumers", state="alive", **q),
        )
        return s if shown == (7, 2, 1, 1) else None

    wait_until(depths, WAIT_S, "pending 7, waiting 2, delayed 1, one live consumer")

    redis_client.delete(keys.worker("ghost"))  # the worker dies
    total = {"reason": "dead_worker", **q}
    moved(port, first, "redbatch_requeued_total", 4, **total)
    moved(port, first, "redbatch_dead_lettered_total", 3, **q)

    def settled() -> Samples | None:
        s = scrape(port)
        shown = (
            value(s, "redbatch_dead_letters", **q),
            value(s, "redbatch_queue_waiting", **normal),
            value(s, "redbatch_queue_pending", **normal),
            value(s, "redbatch_consumers", state="alive", **q),
        )
        return s if shown == (3, 6, 0, 0) else None

    after = wait_until(settled, WAIT_S, "3 dead letters, 6 waiting, 0 pending, nobody alive")
    assert delta(after, first, "redbatch_requeued_total", **total) == 4
    assert delta(after, first, "redbatch_dead_lettered_total", **q) == 3


def test_scheduler_json_logs_start_with_the_effective_config(scheduler_factory: Factory) -> None:
    scheduler = scheduler_factory("--log-format", "json", "--hung-margin", "7")
    assert scheduler.stop() == 0
    lines = [json.loads(line) for line in scheduler.log().splitlines() if line.strip()]
    assert lines[0]["logger"] == "redbatch.scheduler.service"
    assert lines[0]["level"] == "INFO"
    assert lines[0]["msg"].startswith("scheduler on ")
    assert "hung_margin_s=7" in lines[0]["msg"] and "log_format=json" in lines[0]["msg"]
    assert lines[-1]["msg"] == "scheduler stopped"
