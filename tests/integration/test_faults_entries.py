"""Oversized entries and failing scripts: nothing half-written, nobody else blocked.

Redis accepts an XADD of any size; the wire contract bounds an entry (``fields``:
MAX_ENTRY_FIELDS, MAX_FIELD_BYTES). An entry past the bound is dead-lettered as a bounded
copy wherever it turns up: in a worker's batch, in a dead worker's batch the scheduler
reaps, in the delayed set of retries. And finish_batch checks everything that could fail
before its first write: an error leaves the state as it was, and the call can run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from helpers.entries import add_atomically, dead_letters, now_ms, queue_keys, wait_results
from helpers.workers import WorkerProcess, assert_drained, wait_serving, wait_until
from redbatch.protocol.fields import (
    DEAD,
    MAX_ENTRY_FIELDS,
    MAX_FIELD_BYTES,
    MAX_FIELD_NAME_BYTES,
    OK,
    Outcome,
    build_entry,
    decode_reply,
)
from redbatch.protocol.finish_args import Finished, RunFacts, finish_batch_args
from redbatch.protocol.keys import GROUP, QueueKeys
from redbatch.protocol.scripts import Scripts, delayed_member, load_lua

Factory = Callable[..., WorkerProcess]
FIELDS = 5000  # Lua's unpack fails past ~8,000 values: 5,000 fields are 10,000


def oversized(request_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = dict(build_entry(request_id, b"\x01", reply="p1"))
    entry.update({f"extra{i}": "x" for i in range(FIELDS - len(entry))})
    return entry


def good(request_id: str) -> dict[str, Any]:
    return dict(build_entry(request_id, b"\x01", enq=now_ms()))


def check_dead_copy(client: redis.Redis, keys: QueueKeys, request_id: str) -> dict[str, str]:
    [letter] = [d for d in dead_letters(client, keys) if d.get("id") == request_id]
    assert len(letter) <= MAX_ENTRY_FIELDS
    assert f"{FIELDS} fields" in letter["reason"]
    return letter


def test_an_oversized_entry_in_a_batch_is_dead_lettered_and_its_batchmates_answered(
    redis_client: redis.Redis, namespace: str, queue: str, worker_factory: Factory
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    wait_serving(worker_factory([queue]))
    ids = [f"g{i}" for i in range(10)]
    batch = [*map(good, ids[:5]), oversized("big"), *map(good, ids[5:])]
    add_atomically(redis_client, keys.stream, batch)  # one read gets them all: one batch
    results = wait_results(redis_client, keys, [*ids, "big"])
    assert {results[i][b"status"] for i in ids} == {OK.encode()}
    assert results["big"][b"status"] == DEAD.encode()
    check_dead_copy(redis_client, keys, "big")
    assert_drained(redis_client, keys.stream)


def test_a_dead_workers_batch_with_an_oversized_entry_is_reaped(
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    ids = [f"d{i}" for i in range(10)]
    for request_id in ids[:5]:
        redis_client.xadd(keys.stream, good(request_id))
    redis_client.xadd(keys.stream, oversized("big"))
    for request_id in ids[5:]:
        redis_client.xadd(keys.stream, good(request_id))
    # A worker read them all and died (no heartbeat): the scheduler must re-queue them.
    redis_client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=100)
    scheduler_factory()
    wait_until(lambda: redis_client.xpending(keys.stream, GROUP)["pending"] == 0, what="reap")
    check_dead_copy(redis_client, keys, "big")
    wait_serving(worker_factory([queue]))
    results = wait_results(redis_client, keys, [*ids, "big"])
    assert {results[i][b"status"] for i in ids} == {OK.encode()}
    assert results["big"][b"status"] == DEAD.encode()


def test_an_oversized_retry_does_not_block_the_retries_after_it(
    redis_client: redis.Redis, namespace: str, queue: str, scheduler_factory: Factory
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    big = {k.encode(): str(v).encode() for k, v in oversized("big").items()}
    redis_client.zadd(keys.delayed, {delayed_member(big, 2): 1})  # due first
    redis_client.zadd(keys.delayed, {delayed_member({b"id": b"next", b"payload": b"\x01"}, 2): 2})
    scheduler_factory()
    wait_until(lambda: redis_client.zcard(keys.delayed) == 0, what="the retries to move")
    [(_, moved)] = redis_client.xrange(keys.stream)
    assert moved[b"id"] == b"next" and moved[b"attempt"] == b"2"
    [letter] = dead_letters(redis_client, keys)
    assert "delayed retry of 5001 fields" in letter["reason"]


# --- finish_batch: an error injected at each step leaves nothing half-written -------------

STEPS = ("result", "guard", "reply", "dead", "delayed")


def batch_items(entry_ids: list[str]) -> list[Finished]:
    """Two requests that ran (one producer), a dead one, a retry for later."""
    ran = [
        Finished(
            entry_id=entry_ids[i],
            outcome=Outcome(f"r{i}", OK, b"\x01"),
            reply="p1",
            facts=RunFacts(attempt=1, enq=1),
        )
        for i in range(2)
    ]
    dead = Finished(
        entry_id=entry_ids[2], outcome=Outcome("r2", DEAD, b"no"), reply="p1",
        result={"status": DEAD, "error": "no"}, dead_reason="no",
        dead_fields={b"id": b"r2", b"payload": b"\x01"},
    )  # fmt: skip
    retry = Finished(
        entry_id=entry_ids[3], outcome=None, due_ms=now_ms() + 60_000,
        delayed=delayed_member({b"id": b"r3", b"payload": b"\x01"}, 2),
    )  # fmt: skip
    return [*ran, dead, retry]


def snapshot(client: redis.Redis, keys: QueueKeys) -> dict[bytes, Any]:
    """Every key of the queue with its serialized value, and the group's pending list."""
    every = keys.stream[: -len(":stream")] + "*"
    state: dict[bytes, Any] = {name: client.dump(name) for name in client.scan_iter(match=every)}
    rows = client.xpending_range(keys.stream, GROUP, "-", "+", 100)
    state[b"pending"] = [(r["message_id"], r["consumer"], r["times_delivered"]) for r in rows]
    return state


def poison(keys: QueueKeys, step: str) -> str:
    return {
        "result": keys.result("r1"),
        "guard": keys.guard("r1"),
        "reply": keys.reply("p1"),
        "dead": keys.dead,
        "delayed": keys.delayed,
    }[step]


@pytest.mark.parametrize("step", STEPS)
def test_finish_batch_with_an_error_at_a_step_writes_nothing_and_can_run_again(
    redis_client: redis.Redis, namespace: str, queue: str, step: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    entry_ids = [redis_client.xadd(keys.stream, good(f"r{i}")).decode() for i in range(4)]
    redis_client.xreadgroup(GROUP, "w1", {keys.stream: ">"}, count=10)
    if step == "result":
        redis_client.hset(keys.result("r0"), "status", "ok")  # makes the script look
    if step == "guard":
        redis_client.sadd(keys.guard("r0"), "p2")  # makes the script look
    wrong = poison(keys, step)
    redis_client.set(wrong, "not the right type")
    script_keys, argv = finish_batch_args(
        keys, batch_items(entry_ids), ttl_ms=60_000, dead_maxlen=100, common={"worker": "w1"}
    )
    scripts = Scripts(redis_client)
    before = snapshot(redis_client, keys)
    with pytest.raises(redis.ResponseError, match="refused before writing anything"):
        scripts.finish_batch(keys=script_keys, args=argv)
    assert snapshot(redis_client, keys) == before
    redis_client.delete(wrong)
    scripts.finish_batch(keys=script_keys, args=argv)
    assert redis_client.xpending(keys.stream, GROUP)["pending"] == 0
    assert redis_client.hget(keys.result("r1"), "status") == OK.encode()
    assert redis_client.hget(keys.result("r2"), "status") == DEAD.encode()
    assert redis_client.llen(keys.reply("p1")) == 3
    assert redis_client.zcard(keys.delayed) == 1
    assert len(dead_letters(redis_client, keys)) == 1


def test_finish_batch_refuses_a_dead_letter_copy_past_the_bound(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    entry_id = redis_client.xadd(keys.stream, good("r0")).decode()
    redis_client.xreadgroup(GROUP, "w1", {keys.stream: ">"}, count=10)
    item = Finished(
        entry_id=entry_id, outcome=Outcome("r0", DEAD, b"no"), reply="p1",
        result={"status": DEAD}, dead_reason="no",
        dead_fields={f"f{i}".encode(): b"x" for i in range(FIELDS)},
    )  # fmt: skip
    script_keys, argv = finish_batch_args(keys, [item], ttl_ms=60_000, dead_maxlen=100)
    before = snapshot(redis_client, keys)
    with pytest.raises(redis.ResponseError, match="refused before writing anything"):
        Scripts(redis_client).finish_batch(keys=script_keys, args=argv)
    assert snapshot(redis_client, keys) == before


def test_finish_batch_refuses_a_truncated_item(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    entry_ids = [redis_client.xadd(keys.stream, good(f"r{i}")).decode() for i in range(4)]
    redis_client.xreadgroup(GROUP, "w1", {keys.stream: ">"}, count=10)
    script_keys, argv = finish_batch_args(
        keys, batch_items(entry_ids)[:2], ttl_ms=60_000, dead_maxlen=100, common={"worker": "w1"}
    )
    before = snapshot(redis_client, keys)
    with pytest.raises(redis.ResponseError, match="refused before writing anything: malformed"):
        Scripts(redis_client).finish_batch(keys=script_keys, args=argv[:-1])
    assert snapshot(redis_client, keys) == before


def test_finish_batch_with_a_request_id_twice_keeps_the_first_outcome(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    """Two entries of one request id in one call (a producer's retry read in the same batch):
    the first outcome is stored, the second finds it and re-sends it."""
    keys = queue_keys(redis_client, namespace, queue)
    entry_ids = [redis_client.xadd(keys.stream, good("r0")).decode() for _ in range(2)]
    redis_client.xreadgroup(GROUP, "w1", {keys.stream: ">"}, count=10)
    items = [
        Finished(e, Outcome("r0", status, body), reply="p1", facts=RunFacts(attempt=1, enq=1))
        for e, status, body in zip(entry_ids, (OK, "error"), (b"\x01", b"E: second"), strict=True)
    ]
    script_keys, argv = finish_batch_args(
        keys, items, ttl_ms=60_000, dead_maxlen=100, common={"worker": "w1"}
    )
    assert Scripts(redis_client).finish_batch(keys=script_keys, args=argv) == [1]
    assert redis_client.hgetall(keys.result("r0")) == {
        b"status": b"ok",
        b"payload": b"\x01",
        b"attempt": b"1",
        b"enq": b"1",
        b"worker": b"w1",
    }
    replies = [decode_reply(r) for r in redis_client.lrange(keys.reply("p1"), 0, -1)]
    assert [(r.status, r.body) for r in replies] == [(OK, b"\x01")] * 2
    assert redis_client.xpending(keys.stream, GROUP)["pending"] == 0


def test_the_scripts_hold_the_contracts_field_bound() -> None:
    """One fact, two languages: the Lua scripts' bound is fields.MAX_ENTRY_FIELDS."""
    bounds = f"{MAX_ENTRY_FIELDS}, {MAX_FIELD_NAME_BYTES}, {MAX_FIELD_BYTES}"
    assert f"MAX_FIELDS, MAX_NAME, MAX_VALUE = {bounds}" in load_lua("requeue")
    assert f"MAX_VALUES = {2 * MAX_ENTRY_FIELDS}" in load_lua("finish_batch")
    assert f"MAX_FIELDS = {MAX_ENTRY_FIELDS + 1}" in load_lua("move_due")
    assert f"> {2 * MAX_ENTRY_FIELDS}" in load_lua("admit")
