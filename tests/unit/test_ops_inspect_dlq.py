"""Pure parts of ``redbatch inspect`` and ``redbatch dlq`` (rendering, look-up helpers,
replay validation), and replay.lua / the chunked scans on fakeredis (no cmsgpack needed)."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import msgpack
import numpy as np
import pytest

from redbatch.ops.dlq import letters as dlq_ops
from redbatch.ops.inspect import find as inspect_find
from redbatch.ops.inspect import view as inspect_view
from redbatch.protocol.codec import DEFAULT_LIMITS, JSON, MSGPACK, Limits, encode
from redbatch.protocol.fields import parse_entry
from redbatch.protocol.keys import PRIORITIES, KeySpace
from redbatch.protocol.scripts import Scripts, delayed_member, load_lua, replay_args

KEYS = KeySpace().queue("echo")
NOW = 1_700_000_000_000


# -- payloads ------------------------------------------------------------------------------------


def test_payload_view_decodes_msgpack_and_summarises_arrays() -> None:
    data = encode({"v": np.zeros((2, 3), dtype="float32"), "n": 1})
    view = inspect_view.payload_view(data, MSGPACK)
    assert view == {
        "ct": MSGPACK,
        "bytes": len(data),
        "value": {"v": {"ndarray": {"dtype": "float32", "shape": [2, 3]}}, "n": 1},
    }
    json.dumps(view)  # JSON-ready


def test_payload_view_json_and_undecodable() -> None:
    assert inspect_view.payload_view(b'{"a": [1]}', JSON)["value"] == {"a": [1]}
    bad = inspect_view.payload_view(b"\xc1", MSGPACK)
    assert "value" not in bad
    assert "cannot decode" in bad["undecodable"]
    assert "unknown content type" in inspect_view.payload_view(b"x", "xml")["undecodable"]


def test_payload_view_has_no_size_limit_of_its_own() -> None:
    big = encode("x" * (17 * 1024 * 1024), MSGPACK, Limits(32 * 1024 * 1024))
    assert len(big) > DEFAULT_LIMITS.max_payload_bytes
    assert len(inspect_view.payload_view(big, MSGPACK)["value"]) == 17 * 1024 * 1024


def test_jsonable_bytes_keys_and_odd_values() -> None:
    value = {1: b"text", (1, 2): b"\xff\xfe", "s": {1.5, 2.5}}
    out = inspect_view.jsonable(value)
    assert out["1"] == "text"
    assert out["[1, 2]"] == {"bytes": 2}
    assert out["s"].startswith("{")  # repr of what JSON cannot hold
    json.dumps(out)


def test_shorten_cuts_long_lists_maps_and_strings() -> None:
    out = inspect_view.shorten({"l": list(range(25)), "s": "y" * 500})
    assert out["l"][:3] == [0, 1, 2]
    assert out["l"][-1] == "... 5 more"
    assert len(out["l"]) == inspect_view.TEXT_ITEMS + 1
    assert out["s"].endswith("(100 more characters)")
    many = inspect_view.shorten({str(i): i for i in range(30)})
    assert many["..."] == "10 more"


def test_payload_lines_one_line_when_short_else_pretty() -> None:
    short = inspect_view.payload_lines({"ct": "json", "bytes": 7, "value": {"x": 1}})
    assert short == ['payload (json, 7 bytes): {"x": 1}']
    value = {"emb": {"ndarray": {"dtype": "float32", "shape": [384]}}, "t": "z" * 90}
    lines = inspect_view.payload_lines({"ct": "msgpack", "bytes": 9, "value": value})
    assert lines[0] == "payload (msgpack, 9 bytes):"
    assert '    "emb": <ndarray float32 384>,' in lines
    assert lines[-1] == "  }"
    undecodable = {"ct": "msgpack", "bytes": 1, "undecodable": "nope"}
    assert inspect_view.payload_lines(undecodable) == [
        "payload (msgpack, 1 bytes): undecodable: nope"
    ]


def test_pretty_fills_long_scalar_lists() -> None:
    lines = inspect_view.pretty(list(range(40)), width=40)
    assert lines[0] == "[" and lines[-1] == "]"
    assert all(len(line) <= 40 for line in lines)
    body = " ".join(line.strip() for line in lines[1:-1])
    assert json.loads("[" + body + "]") == list(range(40))


# -- ids and times -------------------------------------------------------------------------------


def test_entry_ids() -> None:
    assert inspect_view.entry_ms("1700000000123-4") == 1700000000123
    assert inspect_view.entry_ms("r1") == 0
    assert inspect_view.is_entry_id("1700000000123-4")
    for not_one in ("r1", "1700-", "-1", "a-1", "12"):
        assert not inspect_view.is_entry_id(not_one)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(850, "850 ms"), (3_200, "3.2 s"), (245_000, "4 m 5 s"), (7_380_000, "2 h 3 m"),
     (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h")],
)  # fmt: skip
def test_duration(ms: int, text: str) -> None:
    assert inspect_view.duration(ms) == text


def test_when_and_relative() -> None:
    assert inspect_view.when(0) == "-"
    assert inspect_view.when(NOW - 1500, NOW).endswith("(1.5 s ago)")
    assert inspect_view.relative(2000) == "in 2.0 s"


def test_number_and_text() -> None:
    assert inspect_view.number(b"12") == 12
    assert inspect_view.number(b"x", 7) == 7
    assert inspect_view.number(None, 1) == 1
    assert inspect_view.text(b"\xff") == "\ufffd"


# -- sightings as text ---------------------------------------------------------------------------

ENTRY: dict[str, Any] = {
    "queue": "echo", "lane": "high", "entry_id": "1-0", "since_ms": NOW - 2000,
    "attempt": 2, "enq_ms": NOW - 3000, "fields": {"id": "r1", "replayed": "1"},
    "payload_bytes": 3,
}  # fmt: skip


def joined(sighting: dict[str, Any]) -> str:
    return "\n".join(inspect_view.sighting_lines(sighting, NOW))


def test_waiting_and_held_lines() -> None:
    waiting = joined({**ENTRY, "state": "waiting"})
    assert "waiting in lane high since" in waiting
    assert "attempt 2, lane high, entry 1-0" in waiting
    assert "replayed 1 times" in waiting
    held = joined(
        {**ENTRY, "state": "held", "consumer": "w1", "worker_alive": False,
         "held_since_ms": NOW - 60_000, "deliveries": 2, "started": True}
    )  # fmt: skip
    assert "held by worker w1 (no heartbeat" in held
    assert "(1 m 0 s ago)" in held
    assert "attempt 2 (started: delivered 2 times), lane high, entry 1-0" in held


def test_delayed_finished_cancelled_dead_lines() -> None:
    delayed = joined({**ENTRY, "state": "delayed", "due_ms": NOW + 5000})
    assert "retry due" in delayed and "(in 5.0 s)" in delayed and "attempt 2," in delayed
    assert "overdue" not in delayed
    late = joined({**ENTRY, "state": "delayed", "due_ms": NOW - 60_000})
    assert "(1 m 0 s ago): overdue, is a scheduler running?" in late
    finished = joined(
        {"queue": "echo", "state": "finished", "status": "ok", "worker": "w1", "attempt": 1,
         "enq_ms": 0, "start_ms": NOW - 20, "end_ms": NOW, "batch": 4, "expires_in_ms": None,
         "payload": {"ct": "json", "bytes": 5, "value": [1, 2]}}
    )  # fmt: skip
    assert "finished ok by worker w1" in finished
    assert "batch of 4, ran 20 ms, result never expires" in finished
    assert "payload (json, 5 bytes): [1, 2]" in finished
    cancelled = joined({"queue": "echo", "state": "cancelled", "expires_in_ms": 60_000})
    assert "cancelled (cancel key set, expires in 1 m 0 s)" in cancelled
    dead = joined(
        {**ENTRY, "state": "dead", "dead_entry_id": "9-0", "dead_at_ms": NOW, "reason": "boom"}
    )
    assert "dead since" in dead and "(dead letter 9-0)" in dead and "reason: boom" in dead


# -- look-ups on fakeredis -----------------------------------------------------------------------


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_stream_chunks_resume_after_the_last_id(client: fakeredis.FakeRedis) -> None:
    ids = [client.xadd("s", {"id": f"r{i % 3}", "payload": b"x"}).decode() for i in range(11)]
    forward = [i for c in inspect_find.stream_chunks(client, "s", chunk=4) for i, _ in c]
    assert forward == ids
    chunks = list(inspect_find.stream_chunks(client, "s", newest_first=True, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert [i for c in chunks for i, _ in c] == ids[::-1]
    upto = [i for c in inspect_find.stream_chunks(client, "s", last=ids[5], chunk=4) for i, _ in c]
    assert upto == ids[:6]


def test_scan_stream_finds_every_entry_of_a_request(client: fakeredis.FakeRedis) -> None:
    for i in range(7):
        client.xadd("s", {"id": f"r{i % 3}", "payload": b"x"})
    found = inspect_find.scan_stream(client, "s", "r1", newest_first=True)
    assert len(found) == 2
    assert found[0][0] > found[1][0]
    assert all(f[b"id"] == b"r1" for _i, f in found)


def test_unflat_reads_delayed_members_and_refuses_others() -> None:
    member = delayed_member({b"id": b"r1", b"payload": b"\x01"}, 3, "low")
    assert inspect_find.unflat(member) == {
        b"attempt": b"3",
        b"priority": b"low",
        b"id": b"r1",
        b"payload": b"\x01",
    }
    assert inspect_find.unflat(b"\xc1") is None
    assert inspect_find.unflat(msgpack.packb([b"odd"], use_bin_type=False)) is None
    assert inspect_find.unflat(msgpack.packb({"a": 1})) is None


def test_find_in_fakeredis_reports_waiting_delayed_and_cancel(
    client: fakeredis.FakeRedis,
) -> None:
    keys = KeySpace("t").queue("q")
    client.xadd(keys.stream_for("low"), {"id": "r1", "attempt": "2", "payload": b"\x01"})
    client.xadd(keys.stream, {"id": "other", "payload": b"\x01"})
    client.zadd(keys.delayed, {delayed_member({b"id": b"r1", b"payload": b"1"}, 2): NOW})
    client.set(keys.cancel("r1"), 1, px=60_000)
    states = {s["state"]: s for s in inspect_find.find(client, keys, "r1")}
    assert set(states) == {"waiting", "delayed", "cancelled"}
    assert states["waiting"]["lane"] == "low"
    assert states["waiting"]["attempt"] == 2
    assert states["delayed"]["due_ms"] == NOW
    assert 0 < states["cancelled"]["expires_in_ms"] <= 60_000
    assert inspect_find.find(client, keys, "nobody") == []


def test_result_sighting_decodes_the_payload_with_its_ct() -> None:
    result = {b"status": b"ok", b"payload": b'{"a":1}', b"ct": b"json", b"worker": b"w",
              b"attempt": b"1", b"end": str(NOW).encode(), b"batch": b"2"}  # fmt: skip
    s = inspect_find.result_sighting("q", result, 5000)
    assert s["payload"]["value"] == {"a": 1}
    assert (s["status"], s["batch"], s["expires_in_ms"], s["end_ms"]) == ("ok", 2, 5000, NOW)
    dead = inspect_find.result_sighting("q", {b"status": b"dead", b"error": b"why"}, -1)
    assert dead["error"] == "why"
    assert dead["expires_in_ms"] is None
    assert "payload" not in dead


# -- dlq -----------------------------------------------------------------------------------------


def test_parse_entry_tolerates_the_replay_audit_fields() -> None:
    fields = {b"id": b"r1", b"payload": b"\x01", b"replayed": b"2", b"replayed_at": b"17",
              b"reason": b"old reason"}  # fmt: skip
    request = parse_entry("echo", "1-0", fields)
    assert (request.id, request.attempt, request.payload) == ("r1", 1, b"\x01")


def test_unreplayable_says_why() -> None:
    assert dlq_ops.unreplayable(KEYS, "1-0", {b"id": b"r1", b"payload": b"x"}) == ""
    no_id = dlq_ops.unreplayable(KEYS, "1-0", {b"member": b"x", b"reason": b"unreadable"})
    assert "no valid request id" in no_id and "unreadable" in no_id
    assert "missing field 'payload'" in dlq_ops.unreplayable(KEYS, "1-0", {b"id": b"r1"})
    bad_ct = {b"id": b"r1", b"payload": b"x", b"ct": b"xml"}
    assert "invalid field 'ct'" in dlq_ops.unreplayable(KEYS, "1-0", bad_ct)


def test_summary_of_a_dead_letter() -> None:
    fields = {b"id": b"r1", b"attempt": b"3", b"priority": b"high", b"reason": b"why",
              b"replayed": b"1", b"payload": b"x"}  # fmt: skip
    assert dlq_ops.summary(f"{NOW}-0", fields) == {
        "entry_id": f"{NOW}-0", "request_id": "r1", "reason": "why", "dead_at_ms": NOW,
        "attempt": 3, "lane": "high", "replayed": 1,
    }  # fmt: skip
    assert dlq_ops.summary("1-0", {b"reason": b"r"})["request_id"] is None


def test_replay_args_carry_dead_result_and_every_lane() -> None:
    keys, argv = replay_args(KEYS, "5-0", "r1", now_ms=NOW)
    assert keys == [KEYS.dead, KEYS.result("r1"), *KEYS.streams]
    assert argv == ["5-0", "r1", NOW, "normal", *PRIORITIES]


def test_replay_script_documents_keys_argv_and_reply() -> None:
    header = "\n".join(line for line in load_lua("replay").splitlines() if line.startswith("--"))
    for word in ("KEYS[1]", "KEYS[2]", "KEYS[3..]", "ARGV[1]", "ARGV[5..]", "Reply:", "lane"):
        assert word in header


def replay(client: fakeredis.FakeRedis, entry_id: str, request_id: str) -> list[Any]:
    script_keys, argv = replay_args(KEYS, entry_id, request_id, now_ms=NOW)
    reply: list[Any] = Scripts(client).replay(keys=script_keys, args=argv)
    return reply


def test_replay_moves_the_dead_letter_to_its_lane_once(client: fakeredis.FakeRedis) -> None:
    dead_id = client.xadd(
        KEYS.dead,
        {"id": "r1", "attempt": "3", "deadline": "5", "priority": "low", "replayed": "1",
         "reason": "boom", "payload": b"\x01"},
    ).decode()  # fmt: skip
    client.hset(KEYS.result("r1"), mapping={"status": "dead", "error": "boom"})
    code, new_id, lane, count = replay(client, dead_id, "r1")
    assert (code, lane, count) == (1, b"low", 2)
    [(entry_id, fields)] = client.xrange(KEYS.stream_for("low"))
    assert entry_id == new_id
    assert fields == {b"replayed": b"2", b"replayed_at": str(NOW).encode(), b"id": b"r1",
                      b"priority": b"low", b"payload": b"\x01"}  # fmt: skip
    assert list(fields)[-1] == b"payload"
    assert not client.exists(KEYS.result("r1"))
    assert client.xlen(KEYS.dead) == 0
    assert replay(client, dead_id, "r1") == [0]  # a second replay is a no-op
    assert client.xlen(KEYS.stream_for("low")) == 1


def test_replay_keeps_a_result_that_is_not_dead(client: fakeredis.FakeRedis) -> None:
    dead_id = client.xadd(KEYS.dead, {"id": "r1", "reason": "x", "payload": b"1"}).decode()
    client.hset(KEYS.result("r1"), mapping={"status": "ok", "payload": b"1"})
    assert replay(client, dead_id, "r1") == [-2, b"ok"]
    assert client.hget(KEYS.result("r1"), "status") == b"ok"
    assert client.xlen(KEYS.dead) == 1
    assert all(client.xlen(s) == 0 for s in KEYS.streams)


def test_replay_refuses_a_changed_id_or_unknown_priority(client: fakeredis.FakeRedis) -> None:
    dead_id = client.xadd(KEYS.dead, {"id": "r1", "reason": "x", "payload": b"1"}).decode()
    assert replay(client, dead_id, "r2") == [-1, b"r1"]
    odd = client.xadd(
        KEYS.dead, {"id": "r3", "priority": "urgent", "reason": "x", "payload": b"1"}
    ).decode()
    assert replay(client, odd, "r3") == [-3, b"urgent"]
    assert client.xlen(KEYS.dead) == 2


def test_replayer_by_request_id_replays_the_newest_and_skips_older(
    client: fakeredis.FakeRedis,
) -> None:
    keyspace = KeySpace()
    older = client.xadd(KEYS.dead, {"id": "r1", "reason": "a", "payload": b"1"}).decode()
    newer = client.xadd(KEYS.dead, {"id": "r1", "reason": "b", "payload": b"2"}).decode()
    results = dlq_ops.Replayer(client, keyspace, KEYS).by_ids(["r1", "nobody"], NOW)
    assert [(r.outcome, r.dead_entry_id) for r in results] == [
        (dlq_ops.REPLAYED, newer), (dlq_ops.SKIPPED, older), (dlq_ops.NOT_FOUND, ""),
    ]  # fmt: skip
    assert [f[b"payload"] for _i, f in client.xrange(KEYS.stream)] == [b"2"]


def test_replayer_everything_stops_at_the_snapshot(client: fakeredis.FakeRedis) -> None:
    keyspace = KeySpace()
    client.xadd(KEYS.dead, {"id": "r1", "reason": "a", "payload": b"1"})
    client.xadd(KEYS.dead, {"member": "junk", "reason": "unreadable delayed retry"})
    client.xadd(KEYS.dead, {"id": "r2", "priority": "high", "reason": "b", "payload": b"2"})
    results = dlq_ops.Replayer(client, keyspace, KEYS).everything(NOW)
    outcomes = sorted((r.outcome, r.request_id) for r in results)
    assert outcomes == [("refused", ""), ("replayed", "r1"), ("replayed", "r2")]
    assert client.xlen(KEYS.stream) == 1
    assert client.xlen(KEYS.stream_for("high")) == 1
    assert client.xlen(KEYS.dead) == 1  # the unreplayable one stays
    assert client.sismember(keyspace.queues, "echo")


def test_purge_keeps_what_came_after_the_snapshot(client: fakeredis.FakeRedis) -> None:
    for i in range(3):
        client.xadd(KEYS.dead, {"id": f"r{i}", "reason": "x"})
    total, last = dlq_ops.last_entry(client, KEYS)
    assert total == 3 and last is not None
    late = client.xadd(KEYS.dead, {"id": "late", "reason": "x"}).decode()
    assert dlq_ops.purge(client, KEYS, last) == 3
    assert [i.decode() for i, _f in client.xrange(KEYS.dead)] == [late]
    assert dlq_ops.last_entry(client, KeySpace().queue("empty")) == (0, None)
