"""KEYS/ARGV building for the Lua scripts (pure code), and remove_consumer.lua on fakeredis
(the scripts that use cmsgpack run against the real server in tests/integration)."""

from __future__ import annotations

import fakeredis
import msgpack
import pytest

from redbatch.errors import ConfigError
from redbatch.protocol.fields import (
    DEAD,
    ERROR,
    OK,
    Outcome,
    Request,
    decode_reply,
    result_fields,
)
from redbatch.protocol.finish_args import Finished, RunFacts, finish_batch_args
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace
from redbatch.protocol.scripts import (
    RETRY,
    Admission,
    RequeueItem,
    Scripts,
    admit_args,
    admit_once_args,
    delayed_member,
    load_lua,
    move_due_args,
    remove_consumer_args,
    requeue_args,
)
from redbatch.protocol.streams import ensure_queue

HEADER = 4  # group, ttl, dead-letter max length, items with an outcome
KEYS = KeySpace().queue("echo")


def parsed_items(keys: list[str], argv: list[object]) -> list[dict[str, object]]:
    """finish_batch.lua's items, read the way the script reads them: each with its kind,
    entry id, and (resolved to names) its result, guard and reply keys, reply element,
    result hash as the script writes it, and dead-letter entry."""
    n_common = argv[HEADER]
    assert isinstance(n_common, int)
    common = argv[HEADER + 1 : HEADER + 1 + n_common]
    i = HEADER + 1 + n_common
    key_at = 3
    items: list[dict[str, object]] = []

    def counted(at: int) -> tuple[dict[object, object], int]:
        n = argv[at]
        assert isinstance(n, int)
        values = argv[at + 1 : at + 1 + n]
        return dict(zip(values[::2], values[1::2], strict=True)), at + 1 + n

    while i < len(argv):
        kind, entry_id = argv[i], argv[i + 1]
        item: dict[str, object] = {"kind": kind, "entry_id": entry_id, "dead": {}}
        if kind == "d":
            item["due"], item["delayed"] = argv[i + 2], argv[i + 3]
            i += 4
            items.append(item)
            continue
        request_id, reply_idx, reply = argv[i + 2], argv[i + 3], argv[i + 4]
        assert isinstance(reply_idx, int)
        item.update(request_id=request_id, reply=reply)
        item["reply_key"] = keys[reply_idx - 1] if reply_idx else None
        if kind == "r":
            status, body, attempt, enq, ct = argv[i + 5 : i + 10]
            result = {"status": status, "payload" if status == "ok" else "error": body}
            result.update({"attempt": attempt, "enq": enq, **({"ct": ct} if ct else {})})
            result.update(zip(common[::2], common[1::2], strict=True))
            item["result"] = result
            i += 10
        else:
            assert kind == "g"
            item["result"], at = counted(i + 5)
            item["dead"], i = counted(at)
        if request_id:
            item["result_key"], item["guard_key"] = keys[key_at], keys[key_at + 1]
            key_at += 2
        items.append(item)
    assert i == len(argv)
    assert argv[HEADER - 1] == (key_at - 3) // 2  # the count of result/guard key pairs
    return items


def unflat(data: object) -> dict[bytes, bytes]:
    assert isinstance(data, bytes)
    flat = msgpack.unpackb(data, raw=True)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def ok_item(entry_id: str, request_id: str, reply: str = "") -> Finished:
    outcome = Outcome(request_id, OK, b"\x01")
    return Finished(entry_id, outcome, reply=reply, result=result_fields(outcome, batch=3))


def ran_item(entry_id: str, request_id: str, reply: str = "", **facts: object) -> Finished:
    outcome = Outcome(request_id, OK, b"\x01")
    return Finished(
        entry_id, outcome, reply=reply, facts=RunFacts(**{"attempt": 1, "enq": 5, **facts})
    )  # type: ignore[arg-type]


COMMON: dict[str, str | int] = {"worker": "w1", "start": 10, "end": 12, "batch": 3}


def test_header_and_first_keys() -> None:
    keys, argv = finish_batch_args(
        KEYS, [ok_item("1-0", "r1")], ttl_ms=60_000, dead_maxlen=1000, common=COMMON
    )
    assert keys[:3] == ["rb:{echo}:stream", "rb:{echo}:dead", "rb:{echo}:delayed"]
    assert argv[:HEADER] == [GROUP, 60_000, 1000, 1]
    assert argv[HEADER : HEADER + 9] == [8, "worker", "w1", "start", 10, "end", 12, "batch", 3]
    assert len(parsed_items(keys, argv)) == 1


def test_empty_batch() -> None:
    keys, argv = finish_batch_args(KEYS, [], ttl_ms=1, dead_maxlen=1)
    assert keys == [KEYS.stream, KEYS.dead, KEYS.delayed]
    assert argv == [GROUP, 1, 1, 0, 0]


@pytest.mark.parametrize("make", [ok_item, ran_item])
def test_each_item_names_its_own_result_guard_and_reply_keys(make: object) -> None:
    items = [make("1-0", "r1", reply="p1"), make("1-1", "r2", reply="p2")]  # type: ignore[operator]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=1000, dead_maxlen=10, common=COMMON)
    parsed = parsed_items(keys, argv)
    assert len(parsed) == len(items)
    for n, (rid, pid) in enumerate([("r1", "p1"), ("r2", "p2")]):
        item = parsed[n]
        assert item["entry_id"] == items[n].entry_id
        assert item["result_key"] == f"rb:{{echo}}:result:{rid}"
        assert item["guard_key"] == f"rb:{{echo}}:guard:{rid}"
        assert item["reply_key"] == f"rb:{{echo}}:reply:{pid}"
        assert decode_reply(item["reply"]) == items[n].outcome  # type: ignore[arg-type]
        assert item["result"]["status"] == "ok"  # type: ignore[index]
        assert item["dead"] == {}
    assert len(keys) == 3 + 4 + 2  # + a guard key per request
    assert all("{echo}" in key for key in keys)


def test_ran_item_result_is_the_contract_hash() -> None:
    keys, argv = finish_batch_args(
        KEYS, [ran_item("1-0", "r1", attempt=2, enq=7)], ttl_ms=1, dead_maxlen=1, common=COMMON
    )
    [item] = parsed_items(keys, argv)
    assert item["kind"] == "r"
    assert item["result"] == {
        "status": "ok", "payload": b"\x01", "attempt": 2, "enq": 7,
        "worker": "w1", "start": 10, "end": 12, "batch": 3,
    }  # fmt: skip


def test_ran_item_stores_ct_only_when_not_msgpack_and_ok() -> None:
    keys, argv = finish_batch_args(
        KEYS, [ran_item("1-0", "r1", ct="json")], ttl_ms=1, dead_maxlen=1, common=COMMON
    )
    assert parsed_items(keys, argv)[0]["result"]["ct"] == "json"  # type: ignore[index]
    failed = Finished("1-1", Outcome("r2", ERROR, b"boom"), facts=RunFacts(1, 0, "json"))
    keys, argv = finish_batch_args(KEYS, [failed], ttl_ms=1, dead_maxlen=1, common=COMMON)
    result = parsed_items(keys, argv)[0]["result"]
    assert result["error"] == b"boom"  # type: ignore[index]
    assert "ct" not in result  # type: ignore[operator]


@pytest.mark.parametrize("ct", ["msgpack", "json"])
def test_short_pairs_are_the_ran_items_column_wise(ct: str) -> None:
    """``short`` (request, outcome) pairs give the same items as Finished with facts, before
    the long-form items, and share reply keys with them."""
    outcomes = [Outcome("r1", OK, b"\x01"), Outcome("r2", ERROR, b"boom")]
    requests = [
        Request("echo", f"1-{n}", o.id, b"", reply="p1", enq=5, attempt=2, ct=ct)
        for n, o in enumerate(outcomes)
    ]
    dead = Finished("1-9", Outcome("r9", DEAD, b"why"), reply="p1", dead_reason="why")
    pairs = list(zip(requests, outcomes, strict=True))
    as_facts = [Finished(r.entry_id, o, reply=r.reply, facts=r) for r, o in pairs]
    expected = finish_batch_args(KEYS, [*as_facts, dead], ttl_ms=1, dead_maxlen=1, common=COMMON)
    got = finish_batch_args(
        KEYS, [dead], ttl_ms=1, dead_maxlen=1, common=COMMON,
        short=pairs,
    )  # fmt: skip
    assert got == expected
    assert parsed_items(*got)[1]["result"] == {  # not ok: no payload, no ct
        "status": ERROR, "error": b"boom", "attempt": 2, "enq": 5,
        "worker": "w1", "start": 10, "end": 12, "batch": 3,
    }  # fmt: skip


def test_shared_reply_key_is_deduplicated() -> None:
    items = [ran_item(f"1-{n}", f"r{n}", reply="p1") for n in range(4)]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=1000, dead_maxlen=10, common=COMMON)
    parsed = parsed_items(keys, argv)
    reply_key = KEYS.reply("p1")
    assert keys.count(reply_key) == 1
    assert {item["reply_key"] for item in parsed} == {reply_key}
    assert len({item["result_key"] for item in parsed}) == 4
    assert len(keys) == len(set(keys)) == 3 + 4 + 1 + 4  # + a guard key per request


def test_item_without_reply_has_zero_reply_index() -> None:
    keys, argv = finish_batch_args(KEYS, [ok_item("1-0", "r1")], ttl_ms=1, dead_maxlen=1)
    [item] = parsed_items(keys, argv)
    assert item["reply_key"] is None
    assert item["result_key"] == KEYS.result("r1")
    assert item["reply"] != b""  # the element is still built (Lua ignores it without a key)
    assert not any(":reply:" in key for key in keys)


def test_item_without_outcome_is_only_dead_lettered() -> None:
    raw = {b"id": b"bad id", b"payload": b"x"}
    finished = Finished("2-0", None, dead_reason="missing or invalid field 'id'", dead_fields=raw)
    keys, argv = finish_batch_args(KEYS, [finished], ttl_ms=1, dead_maxlen=1)
    [item] = parsed_items(keys, argv)
    assert item["entry_id"] == "2-0"
    assert item["request_id"] == ""
    assert item["reply_key"] is None
    assert "result_key" not in item
    assert item["reply"] == b""
    assert item["result"] == {}
    assert keys == [KEYS.stream, KEYS.dead, KEYS.delayed]
    dead = item["dead"]
    assert dead == {b"id": b"bad id", b"payload": b"x", b"reason": b"missing or invalid field 'id'"}


def test_dead_item_with_outcome_records_result_reply_and_reason() -> None:
    outcome = Outcome("r9", DEAD, b"out of attempts (3)")
    finished = Finished(
        "3-0",
        outcome,
        reply="p1",
        result=result_fields(outcome, attempt=3),
        dead_reason="out of attempts (3)",
        dead_fields={b"id": b"r9", b"attempt": b"3", b"payload": b"\x00\xff"},
        facts=RunFacts(3, 0),  # a dead letter always takes the long form
    )
    keys, argv = finish_batch_args(KEYS, [finished], ttl_ms=1, dead_maxlen=1, common=COMMON)
    [item] = parsed_items(keys, argv)
    assert item["kind"] == "g"
    assert item["result_key"] == KEYS.result("r9")
    assert item["reply_key"] == KEYS.reply("p1")
    assert decode_reply(item["reply"]) == outcome  # type: ignore[arg-type]
    result = item["result"]
    assert isinstance(result, dict)
    assert result["status"] == "dead"
    assert result["error"] == b"out of attempts (3)"
    dead = item["dead"]
    assert isinstance(dead, dict)
    assert dead[b"reason"] == b"out of attempts (3)"
    assert dead[b"payload"] == b"\x00\xff"
    assert dead[b"attempt"] == b"3"


def test_dead_reason_without_fields_still_carries_reason() -> None:
    outcome = Outcome("r1", ERROR, b"x")
    finished = Finished("4-0", outcome, dead_reason="why")
    keys, argv = finish_batch_args(KEYS, [finished], ttl_ms=1, dead_maxlen=1)
    assert parsed_items(keys, argv)[0]["dead"] == {b"reason": b"why"}


def test_delayed_item_takes_no_keys() -> None:
    later = Finished("5-0", None, due_ms=99, delayed=b"member")
    keys, argv = finish_batch_args(
        KEYS, [later, ran_item("5-1", "r1", reply="p1")], ttl_ms=1, dead_maxlen=1, common=COMMON
    )
    first, second = parsed_items(keys, argv)
    assert (first["kind"], first["due"], first["delayed"]) == ("d", 99, b"member")
    assert second["result_key"] == KEYS.result("r1")
    assert keys == [*keys[:3], KEYS.result("r1"), KEYS.guard("r1"), KEYS.reply("p1")]


def test_result_hash_travels_as_plain_arguments() -> None:
    outcome = Outcome("r1", OK, b"\x01")
    item = Finished("1-0", outcome, result=result_fields(outcome, attempt=2, enq=123, batch=7))
    keys, argv = finish_batch_args(KEYS, [item], ttl_ms=1, dead_maxlen=1)
    result = parsed_items(keys, argv)[0]["result"]
    assert isinstance(result, dict)
    # redis-py sends ints as their decimal text: HSET stores "2", "123", "7".
    assert (result["attempt"], result["enq"], result["batch"]) == (2, 123, 7)
    assert result["payload"] == b"\x01"


def test_mixed_batch_keeps_item_order() -> None:
    items = [
        ran_item("1-0", "r1", reply="p1"),
        Finished("1-1", None, dead_reason="bad", dead_fields={b"x": b"y"}),
        ok_item("1-2", "r3", reply="p1"),
    ]
    keys, argv = finish_batch_args(KEYS, items, ttl_ms=5, dead_maxlen=5, common=COMMON)
    parsed = parsed_items(keys, argv)
    assert [item["entry_id"] for item in parsed] == ["1-0", "1-1", "1-2"]
    assert parsed[1]["reply_key"] is None
    assert parsed[0]["reply_key"] == parsed[2]["reply_key"]
    assert parsed[2]["result_key"] == KEYS.result("r3")


def test_load_lua_finish_batch_documents_keys_and_argv() -> None:
    text = load_lua("finish_batch")
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    for word in (
        "KEYS[1]",
        "KEYS[2]",
        "ARGV[1]",
        "ARGV[2]",
        "ARGV[3]",
        "ARGV[4]",
        '"r"',
        '"g"',
        '"d"',
    ):
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
        KEYS, "w1", [RequeueItem("1-0", "r1", "p1")], mode=RETRY, max_attempts=3, ttl_ms=1,
        dead_maxlen=1, now_ms=5, reason="why", priority=priority,
    )  # fmt: skip
    assert keys[:2] == [KEYS.stream_for(priority), KEYS.dead]
    # the per-entry keys are the queue's, whatever the lane
    assert keys[2:] == [KEYS.result("r1"), KEYS.reply("p1"), KEYS.guard("r1")]
    assert argv[:3] == [GROUP, "w1", RETRY]


@pytest.mark.parametrize("priority", PRIORITIES)
def test_admit_and_admit_once_write_to_the_lane(priority: str) -> None:
    keys, argv = admit_args(
        KEYS, [(0, {"id": "r1", "payload": b"x"})], Admission("p1", 1, 1, 1), max_queue_len=9,
        priority=priority,
    )  # fmt: skip
    assert keys == [KEYS.stream_for(priority), KEYS.admitted("p1")]
    assert argv[0] == 9
    keys, _ = admit_once_args(
        KEYS, "r1", "p1", {"id": "r1", "payload": b"x"}, timeout_ms=0, max_queue_len=9,
        guard_ttl_ms=1, reply_ttl_ms=1, priority=priority,
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
        admit_args(KEYS, [], Admission("p1", 1, 1, 1), max_queue_len=1, priority="HIGH")
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
