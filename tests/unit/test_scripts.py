"""KEYS/ARGV building for finish_batch.lua (pure code, no Redis)."""

from __future__ import annotations

import msgpack
import pytest

from redbatch.protocol.fields import DEAD, ERROR, OK, Outcome, decode_reply, result_fields
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.protocol.scripts import Finished, finish_batch_args, load_lua

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
