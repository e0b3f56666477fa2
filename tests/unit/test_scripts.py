"""KEYS/ARGV building for the Lua scripts (pure code), and remove_consumer.lua on fakeredis
(the scripts that use cmsgpack run against the real server in tests/integration)."""

from __future__ import annotations

import fakeredis
import msgpack
import pytest

from redbatch.errors import ConfigError
from redbatch.protocol.fields import DEAD, ERROR, OK, Outcome, decode_reply, result_fields
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace
from redbatch.protocol.scripts import (
    RETRY,
    Finished,
    Held,
    Scripts,
    admit_args,
    admit_once_args,
    delayed_member,
    finish_batch_args,
    load_lua,
    move_due_args,
    remove_consumer_args,
    requeue_args,
)
from redbatch.protocol.streams import ensure_queue

HEADER = 3
PER_ITEM = 10
KEYS = KeySpace().queue("echo")


def item_args(argv: list[object], n: int) -> list[object]:
    start = HEADER + PER_ITEM * n
    return argv[start : start + PER_ITEM]


def unflat(data: object) -> dict[bytes, bytes]:
    assert isinstance(data, bytes)
    flat = msgpack.unpackb(data, raw=True)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def ok_item(entry_id: str, request_id: str, reply: str = "") -> Finished:
    outcome = Outcome(request_id, OK, b"\x01")
    return Finished(entry_id, outcome, reply=reply, result=result_fields(outcome, batch=3))


def test_header_and_first_keys() -> None:
    keys, argv = finish_batch_args(KEYS, [ok_item("1-0", "r1")], ttl_ms=60_000, dead_maxlen=1000)
    assert keys[:3] == ["rb:{echo}:stream", "rb:{echo}:dead", "rb:{echo}:delayed"]
    assert argv[:HEADER] == [GROUP, 60_000, 1000]
    assert len(argv) == HEADER + PER_ITEM


def test_empty_batch() -> None:
    keys, argv = finish_batch_args(KEYS, [], ttl_ms=1, dead_maxlen=1)
    assert keys == [KEYS.stream, KEYS.dead, KEYS.delayed]
    assert argv == [GROUP, 1, 1]


def test_indexes_are_one_based_and_point_at_the_right_keys() -> None:
    items = [ok_item("1-0", "r1", reply="p1"), ok_item("1-1", "r2", reply="p2")]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=1000, dead_maxlen=10)
    assert len(argv) == HEADER + PER_ITEM * len(items)
    for n, (rid, pid) in enumerate([("r1", "p1"), ("r2", "p2")]):
        entry_id, result_idx, reply_idx, _request_id, reply, result, dead, *_rest = item_args(
            argv, n
        )
        assert entry_id == items[n].entry_id
        assert isinstance(result_idx, int)
        assert isinstance(reply_idx, int)
        assert result_idx >= 4
        assert reply_idx >= 4
        assert keys[result_idx - 1] == f"rb:{{echo}}:result:{rid}"
        assert keys[reply_idx - 1] == f"rb:{{echo}}:reply:{pid}"
        assert decode_reply(reply) == items[n].outcome  # type: ignore[arg-type]
        assert unflat(result)[b"status"] == b"ok"
        assert dead == b""
    assert len(keys) == 3 + 4 + 2  # + a guard key per request
    assert all("{echo}" in key for key in keys)


def test_shared_reply_key_is_deduplicated() -> None:
    items = [ok_item(f"1-{n}", f"r{n}", reply="p1") for n in range(4)]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=1000, dead_maxlen=10)
    reply_key = KEYS.reply("p1")
    assert keys.count(reply_key) == 1
    reply_indexes = {item_args(argv, n)[2] for n in range(4)}
    assert reply_indexes == {keys.index(reply_key) + 1}
    result_indexes = [item_args(argv, n)[1] for n in range(4)]
    assert len(set(result_indexes)) == 4
    assert len(keys) == len(set(keys)) == 3 + 4 + 1 + 4  # + a guard key per request


def test_item_without_reply_has_zero_reply_index() -> None:
    keys, argv = finish_batch_args(KEYS, [ok_item("1-0", "r1")], ttl_ms=1, dead_maxlen=1)
    _, result_idx, reply_idx, _, reply, _, _, _, _, _ = item_args(argv, 0)
    assert reply_idx == 0
    assert keys[result_idx - 1] == KEYS.result("r1")  # type: ignore[operator]
    assert reply != b""  # the element is still built (Lua ignores it without a key)
    assert not any(":reply:" in key for key in keys)


def test_item_without_outcome_is_only_dead_lettered() -> None:
    raw = {b"id": b"bad id", b"payload": b"x"}
    item = Finished("2-0", None, dead_reason="missing or invalid field 'id'", dead_fields=raw)
    keys, argv = finish_batch_args(KEYS, [item], ttl_ms=1, dead_maxlen=1)
    entry_id, result_idx, reply_idx, _request_id, reply, result, dead, _due, _delayed, _guard = (
        item_args(argv, 0)
    )
    assert entry_id == "2-0"
    assert (result_idx, reply_idx) == (0, 0)
    assert reply == b""
    assert result == b""
    assert keys == [KEYS.stream, KEYS.dead, KEYS.delayed]
    fields = unflat(dead)
    assert fields[b"reason"] == b"missing or invalid field 'id'"
    assert fields[b"id"] == b"bad id"
    assert fields[b"payload"] == b"x"


def test_dead_item_with_outcome_records_result_reply_and_reason() -> None:
    outcome = Outcome("r9", DEAD, b"out of attempts (3)")
    item = Finished(
        "3-0",
        outcome,
        reply="p1",
        result=result_fields(outcome, attempt=3),
        dead_reason="out of attempts (3)",
        dead_fields={b"id": b"r9", b"attempt": b"3", b"payload": b"\x00\xff"},
    )
    keys, argv = finish_batch_args(KEYS, [item], ttl_ms=1, dead_maxlen=1)
    _, result_idx, reply_idx, _, reply, result, dead, _, _, _ = item_args(argv, 0)
    assert keys[result_idx - 1] == KEYS.result("r9")  # type: ignore[operator]
    assert keys[reply_idx - 1] == KEYS.reply("p1")  # type: ignore[operator]
    assert decode_reply(reply) == outcome  # type: ignore[arg-type]
    assert unflat(result)[b"status"] == b"dead"
    assert unflat(result)[b"error"] == b"out of attempts (3)"
    dead_fields = unflat(dead)
    assert dead_fields[b"reason"] == b"out of attempts (3)"
    assert dead_fields[b"payload"] == b"\x00\xff"
    assert dead_fields[b"attempt"] == b"3"


def test_dead_reason_without_fields_still_carries_reason() -> None:
    outcome = Outcome("r1", ERROR, b"x")
    item = Finished("4-0", outcome, dead_reason="why")
    _, argv = finish_batch_args(KEYS, [item], ttl_ms=1, dead_maxlen=1)
    assert unflat(item_args(argv, 0)[6]) == {b"reason": b"why"}


def test_result_hash_integers_travel_as_strings() -> None:
    outcome = Outcome("r1", OK, b"\x01")
    item = Finished("1-0", outcome, result=result_fields(outcome, attempt=2, enq=123, batch=7))
    _, argv = finish_batch_args(KEYS, [item], ttl_ms=1, dead_maxlen=1)
    fields = unflat(item_args(argv, 0)[5])
    assert fields[b"attempt"] == b"2"
    assert fields[b"enq"] == b"123"
    assert fields[b"batch"] == b"7"
    assert fields[b"payload"] == b"\x01"


def test_mixed_batch_keeps_item_order() -> None:
    items = [
        ok_item("1-0", "r1", reply="p1"),
        Finished("1-1", None, dead_reason="bad", dead_fields={b"x": b"y"}),
        ok_item("1-2", "r3", reply="p1"),
    ]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=5, dead_maxlen=5)
    assert [item_args(argv, n)[0] for n in range(3)] == ["1-0", "1-1", "1-2"]
    assert item_args(argv, 1)[1:3] == [0, 0]
    assert item_args(argv, 0)[2] == item_args(argv, 2)[2]
    assert keys[item_args(argv, 2)[1] - 1] == KEYS.result("r3")  # type: ignore[operator]


def test_load_lua_finish_batch_documents_keys_and_argv() -> None:
    text = load_lua("finish_batch")
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    for word in ("KEYS[1]", "KEYS[2]", "ARGV[1]", "ARGV[2]", "ARGV[3]", "ARGV[4..]", "10 values"):
        assert word in header
    assert "XACK" in text
    assert "XDEL" in text


def test_load_lua_unknown_script() -> None:
    with pytest.raises(FileNotFoundError):
        load_lua("no_such_script")


# -- priority lanes: one lane's stream per call, or every lane for queue-wide scripts ---------


@pytest.mark.parametrize("priority", PRIORITIES)
def test_finish_batch_takes_the_lane_stream_first(priority: str) -> None:
    keys, _ = finish_batch_args(
        KEYS, [ok_item("1-0", "r1")], ttl_ms=1, dead_maxlen=1, priority=priority
    )
    assert keys[:3] == [KEYS.stream_for(priority), KEYS.dead, KEYS.delayed]


def test_finish_batch_default_lane_is_the_contract_stream() -> None:
    keys, _ = finish_batch_args(KEYS, [], ttl_ms=1, dead_maxlen=1)
    assert keys[0] == "rb:{echo}:stream"


@pytest.mark.parametrize("priority", PRIORITIES)
def test_requeue_takes_the_lane_stream_first(priority: str) -> None:
    keys, argv = requeue_args(
        KEYS, "w1", [Held("1-0", "r1", "p1")], mode=RETRY, max_attempts=3, ttl_ms=1,
        dead_maxlen=1, now_ms=5, reason="why", priority=priority,
    )  # fmt: skip
    assert keys[:2] == [KEYS.stream_for(priority), KEYS.dead]
    # the per-entry keys are the queue's, whatever the lane
    assert keys[2:] == [KEYS.result("r1"), KEYS.reply("p1"), KEYS.guard("r1")]
    assert argv[:3] == [GROUP, "w1", RETRY]


@pytest.mark.parametrize("priority", PRIORITIES)
def test_admit_and_admit_once_write_to_the_lane(priority: str) -> None:
    keys, argv = admit_args(
        KEYS, [{"id": "r1", "payload": b"x"}], max_queue_len=9, priority=priority
    )
    assert keys == [KEYS.stream_for(priority)]
    assert argv[0] == 9
    keys, _ = admit_once_args(
        KEYS, "r1", "p1", {"id": "r1", "payload": b"x"}, max_queue_len=9, guard_ttl_ms=1,
        reply_ttl_ms=1, priority=priority,
    )  # fmt: skip
    assert keys == [
        KEYS.stream_for(priority),
        KEYS.result("r1"),
        KEYS.guard("r1"),
        KEYS.reply("p1"),
    ]


def test_lane_arguments_refuse_an_unknown_priority() -> None:
    with pytest.raises(ConfigError, match="priority"):
        finish_batch_args(KEYS, [], ttl_ms=1, dead_maxlen=1, priority="urgent")
    with pytest.raises(ConfigError, match="priority"):
        admit_args(KEYS, [], max_queue_len=1, priority="HIGH")
    with pytest.raises(ConfigError, match="priority"):
        delayed_member({b"id": b"r1"}, 2, "urgent")


def test_move_due_gets_every_lane_with_its_priority() -> None:
    keys, argv = move_due_args(KEYS, now_ms=123, limit=50, dead_maxlen=7)
    assert keys == [KEYS.delayed, KEYS.dead, *KEYS.streams]
    assert argv[:4] == [123, 50, 7, "normal"]
    lanes = dict(zip(argv[4:], keys[2:], strict=True))
    assert lanes == {p: KEYS.stream_for(p) for p in PRIORITIES}


def test_remove_consumer_gets_the_heartbeat_then_every_lane() -> None:
    keys, argv = remove_consumer_args(KEYS, "w1")
    assert keys == [KEYS.worker("w1"), *KEYS.streams]
    assert argv == [GROUP, "w1"]


def test_delayed_member_remembers_its_lane_and_next_attempt() -> None:
    fields = {b"id": b"r1", b"attempt": b"1", b"payload": b"\x00"}
    assert unflat(delayed_member(fields, 2)) == {
        b"id": b"r1",
        b"attempt": b"2",
        b"payload": b"\x00",
    }
    high = unflat(delayed_member(fields, 2, "high"))
    assert high == {b"id": b"r1", b"attempt": b"2", b"priority": b"high", b"payload": b"\x00"}
    # the lane it was read from wins over a stale field; normal leaves the field out
    moved = {**fields, b"priority": b"low"}
    assert unflat(delayed_member(moved, 3, "high"))[b"priority"] == b"high"
    assert b"priority" not in unflat(delayed_member(moved, 3, "normal"))
    # payload stays last
    flat = msgpack.unpackb(delayed_member(fields, 2, "low"), raw=True)
    assert flat[-2] == b"payload"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("move_due", ("KEYS[1]", "KEYS[2]", "KEYS[3..]", "ARGV[4]", "ARGV[5..]", "priority")),
        ("remove_consumer", ("KEYS[1]", "KEYS[2..]", "ARGV[1]", "ARGV[2]", "lane")),
        ("finish_batch", ("KEYS[1]", "lane")),
        ("requeue", ("KEYS[1]", "lane")),
        ("admit", ("KEYS[1]", "lane")),
        ("admit_once", ("KEYS[1]", "lane")),
    ],
)
def test_lane_scripts_document_their_keys(name: str, words: tuple[str, ...]) -> None:
    header = "\n".join(line for line in load_lua(name).splitlines() if line.startswith("--"))
    for word in words:
        assert word in header


# -- remove_consumer.lua over every lane (fakeredis runs it: no cmsgpack needed) ---------------


def lanes_client() -> tuple[fakeredis.FakeRedis, Scripts]:
    client = fakeredis.FakeRedis()
    ensure_queue(client, KeySpace(), KEYS)
    return client, Scripts(client)


def remove(scripts: Scripts, consumer: str) -> int:
    keys, argv = remove_consumer_args(KEYS, consumer)
    return int(scripts.remove_consumer(keys=keys, args=argv))


def consumers(client: fakeredis.FakeRedis) -> dict[str, list[bytes]]:
    return {
        stream: [c["name"] for c in client.xinfo_consumers(stream, GROUP)]
        for stream in KEYS.streams
    }


def test_remove_consumer_keeps_one_holding_anything_in_any_lane() -> None:
    client, scripts = lanes_client()
    low = KEYS.stream_for("low")
    client.xadd(low, {"id": "r1", "payload": "x"})
    client.xreadgroup(GROUP, "w1", {s: ">" for s in KEYS.streams})
    assert remove(scripts, "w1") == 0
    assert all(names == [b"w1"] for names in consumers(client).values())
    [(entry_id, _)] = client.xrange(low)
    client.xack(low, GROUP, entry_id)
    assert remove(scripts, "w1") == 1
    assert all(names == [] for names in consumers(client).values())


def test_remove_consumer_keeps_one_with_a_heartbeat() -> None:
    client, scripts = lanes_client()
    client.xreadgroup(GROUP, "w1", {s: ">" for s in KEYS.streams})
    client.set(KEYS.worker("w1"), "alive")
    assert remove(scripts, "w1") == 0
    assert consumers(client)[KEYS.stream] == [b"w1"]


def test_remove_consumer_skips_a_lane_whose_stream_is_gone() -> None:
    client, scripts = lanes_client()
    client.xreadgroup(GROUP, "w1", {KEYS.stream: ">"})
    client.delete(KEYS.stream_for("high"))
    assert remove(scripts, "w1") == 1
    assert client.xinfo_consumers(KEYS.stream, GROUP) == []
