"""The scheduler as a real process against a real Redis, with workers simulated by hand.

A "worker" here is only a consumer name in the group (XREADGROUP) and, for a live one, a
heartbeat hash with a TTL: exactly what the scheduler looks at.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import msgpack
import redis

from helpers import subprocess_env
from helpers.entries import queue_keys
from helpers.workers import WorkerProcess, wait_until
from redbatch.protocol.fields import DEAD, build_entry, decode_reply
from redbatch.protocol.keys import GROUP, QueueKeys
from redbatch.protocol.scripts import delayed_member

SchedulerFactory = Callable[..., WorkerProcess]
WAIT_S = 30.0  # far above the few passes (0.2 s apart) any of these needs
RUN_TIMEOUT_S = 60.0


# -- simulated producers and workers -----------------------------------------------------------


def add(
    client: redis.Redis,
    keys: QueueKeys,
    n: int,
    *,
    attempt: int = 1,
    reply: str = "",
    tag: str = "r",
) -> list[str]:
    """Add ``n`` requests; returns their request ids."""
    ids = [f"{tag}{i}" for i in range(n)]
    pipe = client.pipeline(transaction=False)
    for request_id in ids:
        payload = msgpack.packb({"i": request_id})
        pipe.xadd(keys.stream, build_entry(request_id, payload, reply=reply, attempt=attempt))  # type: ignore[arg-type]
    pipe.execute()
    return ids


def take(client: redis.Redis, keys: QueueKeys, consumer: str, n: int) -> list[bytes]:
    """Read ``n`` new entries as ``consumer`` (they become pending to it) and mark them
    started, as a worker does before running a batch; returns entry ids."""
    reply = client.xreadgroup(GROUP, consumer, {keys.stream: ">"}, count=n)
    entry_ids = [entry_id for entry_id, _fields in reply[0][1]] if reply else []
    assert len(entry_ids) == n
    client.xclaim(keys.stream, GROUP, consumer, 0, entry_ids, justid=True, retrycount=2)
    return entry_ids


def heartbeat(client: redis.Redis, keys: QueueKeys, consumer: str, batch_timeout_s: int) -> None:
    """The hash a live worker keeps; TTL 30 s so it outlives the test."""
    key = keys.worker(consumer)
    client.hset(
        key,
        mapping={
            "pid": 1, "host": "test", "queues": keys.name, "started": int(time.time() * 1000),
            "batches": 0, "items": 0, "last_batch": 0, "batch_timeout": batch_timeout_s,
            "state": "serving",
        },
    )  # fmt: skip
    client.expire(key, 30)


def make_idle(client: redis.Redis, keys: QueueKeys, consumer: str, entry_ids: list[bytes]) -> None:
    """Make held entries look pending for 60 s without waiting 60 s (same owner, JUSTID)."""
    claimed = client.xclaim(keys.stream, GROUP, consumer, 0, entry_ids, idle=60_000, justid=True)
    assert len(claimed) == len(entry_ids)


def stream(client: redis.Redis, keys: QueueKeys) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(entry_id, fields) for entry_id, fields in client.xrange(keys.stream)]


def held_by(client: redis.Redis, keys: QueueKeys, consumer: str) -> int:
    return len(client.xpending_range(keys.stream, GROUP, "-", "+", 10_000, consumername=consumer))


def requeued(client: redis.Redis, keys: QueueKeys, n: int, attempt: int) -> bool:
    """The stream holds exactly n entries, all at ``attempt`` and none pending."""
    entries = stream(client, keys)
    pending = client.xpending(keys.stream, GROUP)["pending"]
    return (
        len(entries) == n
        and pending == 0
        and all(f.get(b"attempt") == str(attempt).encode() for _, f in entries)
    )


# -- dead workers ------------------------------------------------------------------------------


def test_dead_consumer_entries_are_requeued_with_next_attempt(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    request_ids = add(redis_client, keys, 5, reply="p1")
    old_entry_ids = take(redis_client, keys, "ghost", 5)
    scheduler = scheduler_factory()

    wait_until(lambda: requeued(redis_client, keys, 5, attempt=2), WAIT_S, "re-queue at attempt 2")
    entries = stream(redis_client, keys)
    assert sorted(f[b"id"].decode() for _, f in entries) == sorted(request_ids)
    assert not set(old_entry_ids) & {entry_id for entry_id, _ in entries}
    for _, fields in entries:
        assert fields[b"reply"] == b"p1"
        assert msgpack.unpackb(fields[b"payload"]) == {"i": fields[b"id"].decode()}
    assert held_by(redis_client, keys, "ghost") == 0
    assert redis_client.xlen(keys.dead) == 0
    wait_until(lambda: "re-queued 5" in scheduler.log(), WAIT_S, "one log line for the batch")
    line = next(x for x in scheduler.log().splitlines() if "re-queued 5" in x)
    assert "ghost" in line
    assert queue in line
    assert " r0" not in scheduler.log()  # nothing per request


def test_dead_consumer_entries_out_of_attempts_end_dead(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    request_ids = add(redis_client, keys, 3, attempt=3, reply="p1")
    take(redis_client, keys, "ghost", 3)
    scheduler_factory("--max-attempts", "3")

    wait_until(lambda: redis_client.xlen(keys.dead) == 3, WAIT_S, "3 dead letters")
    wait_until(lambda: redis_client.llen(keys.reply("p1")) == 3, WAIT_S, "3 replies")
    assert redis_client.xlen(keys.stream) == 0
    assert held_by(redis_client, keys, "ghost") == 0
    for _, fields in redis_client.xrange(keys.dead):
        assert b"ghost" in fields[b"reason"]
        assert fields[b"id"].decode() in request_ids
    for request_id in request_ids:
        result = redis_client.hgetall(keys.result(request_id))
        assert result[b"status"] == DEAD.encode()
        assert b"ghost" in result[b"error"]
        assert result[b"attempt"] == b"3"
        assert 0 < redis_client.pttl(keys.result(request_id)) <= 3600 * 1000
    replies = [decode_reply(r) for r in redis_client.lrange(keys.reply("p1"), 0, -1)]
    assert sorted(r.id for r in replies) == sorted(request_ids)
    assert {r.status for r in replies} == {DEAD}
    assert all("ghost" in r.error for r in replies)


def test_dead_consumer_holding_several_pages_loses_all_of_them(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    request_ids = add(redis_client, keys, 1234)  # the scheduler pages through 500 at a time
    take(redis_client, keys, "ghost", 1234)
    scheduler_factory()

    wait_until(lambda: requeued(redis_client, keys, 1234, attempt=2), WAIT_S, "all pages")
    ids = sorted(f[b"id"].decode() for _, f in stream(redis_client, keys))
    assert ids == sorted(request_ids)


def test_vanished_entry_of_dead_consumer_is_acked(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, 2)
    entry_ids = take(redis_client, keys, "ghost", 2)
    redis_client.xdel(keys.stream, entry_ids[0])  # its record is gone, its PEL entry stays
    scheduler_factory()

    wait_until(lambda: requeued(redis_client, keys, 1, attempt=2), WAIT_S, "one re-queued")
    assert redis_client.xlen(keys.dead) == 0


# -- hung workers ------------------------------------------------------------------------------


def test_hung_consumer_loses_entries_past_batch_timeout_live_one_keeps_its_own(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, 3, tag="hung")
    heartbeat(redis_client, keys, "busy", batch_timeout_s=1)
    hung_ids = take(redis_client, keys, "busy", 3)
    make_idle(redis_client, keys, "busy", hung_ids)
    add(redis_client, keys, 2, tag="slow")
    heartbeat(redis_client, keys, "patient", batch_timeout_s=300)
    slow_ids = take(redis_client, keys, "patient", 2)
    # 60 s pending is past busy's 1 s + 0 margin, but well within patient's 300 s.
    make_idle(redis_client, keys, "patient", slow_ids)
    scheduler = scheduler_factory("--hung-margin", "0")

    wait_until(lambda: held_by(redis_client, keys, "busy") == 0, WAIT_S, "busy's entries reaped")
    # Queues are reaped one after the other: once a ghost entry added now on another queue is
    # reaped, the reap of this queue (which judged "patient" too) has finished.
    sentinel = queue_keys(redis_client, namespace, queue + "-sentinel")
    add(redis_client, sentinel, 1)
    take(redis_client, sentinel, "ghost", 1)
    wait_until(lambda: requeued(redis_client, sentinel, 1, attempt=2), WAIT_S, "sentinel reaped")

    assert held_by(redis_client, keys, "patient") == 2
    entries = {f[b"id"].decode(): f for _, f in stream(redis_client, keys)}
    # patient's entries are still in the stream (pending to it), untouched at attempt 1
    assert set(entries) == {"hung0", "hung1", "hung2", "slow0", "slow1"}
    attempts = {rid: f.get(b"attempt", b"1") for rid, f in entries.items()}
    assert attempts == {
        **dict.fromkeys(["hung0", "hung1", "hung2"], b"2"),
        "slow0": b"1",
        "slow1": b"1",
    }
    assert redis_client.exists(keys.worker("busy"))  # the scheduler never touches heartbeats
    assert "held past batch_timeout by busy" in scheduler.log()


# -- delayed retries ---------------------------------------------------------------------------


def test_due_delayed_retries_move_to_the_stream_future_ones_stay(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    now_ms = int(time.time() * 1000)
    due = delayed_member({b"id": b"due1", b"reply": b"p1", b"payload": b"\xa1x"}, 2)
    later = delayed_member({b"id": b"later1", b"payload": b"\xa1y"}, 2)
    redis_client.zadd(keys.delayed, {due: now_ms - 1000, later: now_ms + 3_600_000})
    scheduler_factory()

    wait_until(lambda: redis_client.xlen(keys.stream) == 1, WAIT_S, "the due retry in the stream")
    [(_, fields)] = stream(redis_client, keys)
    assert fields == {b"attempt": b"2", b"id": b"due1", b"reply": b"p1", b"payload": b"\xa1x"}
    assert redis_client.zrange(keys.delayed, 0, -1) == [later]


def test_unreadable_delayed_member_is_dead_lettered_and_blocks_nothing(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    now_ms = int(time.time() * 1000)
    good = delayed_member({b"id": b"good1", b"payload": b"\xa1x"}, 2)
    # Scored before the good one: a script that failed on it would never reach good1.
    redis_client.zadd(keys.delayed, {b"\xc1not msgpack": now_ms - 2000, good: now_ms - 1000})
    scheduler_factory()

    wait_until(lambda: redis_client.xlen(keys.stream) == 1, WAIT_S, "the good retry moved")
    assert redis_client.zcard(keys.delayed) == 0
    [(_, dead)] = redis_client.xrange(keys.dead)
    assert dead == {b"reason": b"unreadable delayed retry", b"member": b"\xc1not msgpack"}


# -- consumer clean-up -------------------------------------------------------------------------


def test_dead_consumer_holding_nothing_is_removed_live_one_stays(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    redis_client.xgroup_createconsumer(keys.stream, GROUP, "gone")
    redis_client.xgroup_createconsumer(keys.stream, GROUP, "alive")
    heartbeat(redis_client, keys, "alive", batch_timeout_s=300)
    scheduler = scheduler_factory()

    def names() -> set[str]:
        return {c["name"].decode() for c in redis_client.xinfo_consumers(keys.stream, GROUP)}

    # Removal waits until the consumer has been idle a few seconds: poll well past that.
    wait_until(lambda: "gone" not in names(), WAIT_S, "consumer 'gone' removed")
    # All heartbeats of a pass are read before any removal, so "alive" was judged already.
    assert "alive" in names()
    assert "removed consumer gone" in scheduler.log()


# -- queues appearing later --------------------------------------------------------------------


def test_queue_added_after_start_is_served(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    first = queue_keys(redis_client, namespace, queue)
    add(redis_client, first, 1)
    take(redis_client, first, "ghost", 1)
    scheduler_factory()
    wait_until(lambda: requeued(redis_client, first, 1, attempt=2), WAIT_S, "first queue served")

    later = queue_keys(redis_client, namespace, queue + "-later")
    add(redis_client, later, 4)
    take(redis_client, later, "ghost", 4)
    wait_until(lambda: requeued(redis_client, later, 4, attempt=2), WAIT_S, "new queue served")


def test_deleted_stream_is_skipped_quietly(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    gone = queue_keys(redis_client, namespace, queue + "-gone")
    redis_client.delete(gone.stream)  # still listed in rb:queues
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, 1)
    take(redis_client, keys, "ghost", 1)
    scheduler = scheduler_factory()

    wait_until(lambda: requeued(redis_client, keys, 1, attempt=2), WAIT_S, "the other queue served")
    assert "failed" not in scheduler.log()
    assert not redis_client.exists(gone.stream)  # not resurrected by the scheduler


# -- several schedulers ------------------------------------------------------------------------


def test_two_schedulers_requeue_each_entry_exactly_once(
    scheduler_factory: SchedulerFactory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    schedulers = [scheduler_factory("--log-level", "DEBUG") for _ in range(2)]
    request_ids = add(redis_client, keys, 300)
    take(redis_client, keys, "ghost", 300)

    def logged_requeues() -> int:
        counts = re.findall(r"re-queued (\d+)", "".join(s.log() for s in schedulers))
        return sum(int(n) for n in counts)

    wait_until(lambda: requeued(redis_client, keys, 300, attempt=2), WAIT_S, "300 re-queued")
    wait_until(lambda: logged_requeues() >= 300, WAIT_S, "both logs account for 300")
    assert logged_requeues() == 300
    entries = stream(redis_client, keys)
    ids = [f[b"id"].decode() for _, f in entries]
    assert len(ids) == 300
    assert sorted(ids) == sorted(request_ids)  # no duplicates, none lost
    assert {f[b"attempt"] for _, f in entries} == {b"2"}
    assert redis_client.xlen(keys.dead) == 0


# -- command line ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redbatch", "scheduler", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redbatch: error:"), lines[0]
    return lines[0]


def test_bad_interval_exits_2_with_one_line(redis_url: str) -> None:
    line = one_error_line(run_cli("--redis-url", redis_url, "--interval", "-1"), 2)
    assert "interval" in line


def test_unreachable_redis_exits_3_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    line = one_error_line(run_cli("--redis-url", f"redis://127.0.0.1:{port}/0"), 3)
    assert time.monotonic() - started < 15.0
    assert str(port) in line
