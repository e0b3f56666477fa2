"""Entry, result and reply records of wire contract v1 (docs/wire-contract.md)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from redbatch.errors import MalformedEntry
from redbatch.protocol.codec import JSON, MSGPACK, decode, encode
from redbatch.protocol.fields import (
    CANCELLED,
    DEAD,
    ERROR,
    EXPIRED,
    OK,
    STATUSES,
    Outcome,
    Request,
    build_entry,
    decode_reply,
    entry_request_id,
    integer_field,
    integer_field_or_default,
    outcome_from_result,
    parse_entry,
    result_fields,
)
from redbatch.protocol.keys import DEFAULT_PRIORITY, PRIORITIES

ID_CHARS = "abcXYZ019_.:-"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=128)


def as_redis(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What XREADGROUP returns for fields written with XADD: bytes keys and values."""
    out: dict[bytes, bytes] = {}
    for key, value in fields.items():
        if isinstance(value, bytes):
            out[key.encode()] = value
        else:
            out[key.encode()] = str(value).encode("ascii")
    return out


# --- build_entry ---------------------------------------------------------------------------


def test_build_entry_leaves_defaults_out() -> None:
    assert build_entry("r1", b"p") == {"id": "r1", "payload": b"p"}
    explicit_defaults = build_entry(
        "r1", b"p", reply="", enq=0, deadline=0, attempt=1, cost=1, ct=MSGPACK, priority="normal"
    )
    assert explicit_defaults == {"id": "r1", "payload": b"p"}


def test_build_entry_includes_non_defaults() -> None:
    entry = build_entry(
        "r1", b"p", reply="prod1", enq=1000, deadline=2000, attempt=3, cost=5, ct=JSON
    )
    assert entry == {
        "id": "r1",
        "reply": "prod1",
        "enq": 1000,
        "deadline": 2000,
        "attempt": 3,
        "cost": 5,
        "ct": "json",
        "payload": b"p",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reply": "p"}, "reply"),
        ({"enq": 1}, "enq"),
        ({"deadline": 5}, "deadline"),
        ({"attempt": 2}, "attempt"),
        ({"cost": 3}, "cost"),
        ({"ct": JSON}, "ct"),
        ({"priority": "high"}, "priority"),
        ({"priority": "low"}, "priority"),
    ],
)
def test_build_entry_one_non_default_field(kwargs: dict[str, Any], field: str) -> None:
    entry = build_entry("r1", b"p", **kwargs)
    assert set(entry) == {"id", "payload", field}
    assert entry[field] == next(iter(kwargs.values()))


# --- parse_entry ---------------------------------------------------------------------------


def test_parse_minimal_entry_gets_defaults() -> None:
    req = parse_entry("echo", "1-0", {b"id": b"r1", b"payload": b"\x01"})
    assert req == Request(queue="echo", entry_id="1-0", id="r1", payload=b"\x01")
    assert (req.reply, req.enq, req.deadline, req.attempt, req.cost, req.ct) == (
        "",
        0,
        0,
        1,
        1,
        MSGPACK,
    )


def test_parse_hand_written_redis_cli_entry() -> None:
    # redis-cli XADD 'rb:{echo}:stream' '*' id r1 ct json payload '{"x": 1}'
    req = parse_entry("echo", "5-1", {b"id": b"r1", b"ct": b"json", b"payload": b'{"x": 1}'})
    assert req.ct == JSON
    assert decode(req.payload, req.ct) == {"x": 1}


@given(
    request_id=ids,
    payload=st.binary(max_size=64),
    reply=st.one_of(st.just(""), ids),
    enq=st.integers(min_value=0, max_value=2**62),
    deadline=st.integers(min_value=0, max_value=2**62),
    attempt=st.integers(min_value=1, max_value=10**6),
    cost=st.integers(min_value=1, max_value=10**6),
    ct=st.sampled_from([MSGPACK, JSON]),
    priority=st.sampled_from(PRIORITIES),
)
def test_parse_entry_round_trips_build_entry(
    request_id: str,
    payload: bytes,
    reply: str,
    enq: int,
    deadline: int,
    attempt: int,
    cost: int,
    ct: str,
    priority: str,
) -> None:
    entry = build_entry(
        request_id,
        payload,
        reply=reply,
        enq=enq,
        deadline=deadline,
        attempt=attempt,
        cost=cost,
        ct=ct,
        priority=priority,
    )
    req = parse_entry("q", "9-9", as_redis(entry))
    assert req == Request(
        queue="q",
        entry_id="9-9",
        id=request_id,
        payload=payload,
        reply=reply,
        enq=enq,
        deadline=deadline,
        attempt=attempt,
        cost=cost,
        ct=ct,
        priority=priority,
    )


def test_priority_defaults_to_normal_and_is_left_out_there() -> None:
    assert DEFAULT_PRIORITY == "normal"
    assert Request(queue="q", entry_id="1-0", id="r1", payload=b"x").priority == "normal"
    assert "priority" not in build_entry("r1", b"p")
    assert build_entry("r1", b"p", priority="high")["priority"] == "high"
    # payload stays last, as producers write it
    assert list(build_entry("r1", b"p", priority="low"))[-1] == "payload"


@pytest.mark.parametrize("priority", PRIORITIES)
def test_parse_entry_reads_each_priority(priority: str) -> None:
    req = parse_entry("q", "1-0", {**BASE, b"priority": priority.encode()})
    assert req.priority == priority


def test_malformed_priority_reason_lists_the_valid_ones() -> None:
    with pytest.raises(MalformedEntry, match="use high, normal, low"):
        parse_entry("q", "1-0", {**BASE, b"priority": b"urgent"})


def test_parse_entry_ignores_unknown_fields() -> None:
    req = parse_entry("q", "1-0", {b"id": b"r1", b"payload": b"x", b"extra": b"\xff"})
    assert req.id == "r1"


BASE = {b"id": b"r1", b"payload": b"x"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({b"payload": b"x"}, "id"),
        ({b"id": b"", b"payload": b"x"}, "id"),
        ({b"id": b"has space", b"payload": b"x"}, "id"),
        ({b"id": b"{r1}", b"payload": b"x"}, "id"),
        ({b"id": b"r" * 129, b"payload": b"x"}, "id"),
        ({b"id": "r\u00e9".encode(), b"payload": b"x"}, "id"),
        ({b"id": b"r1"}, "payload"),
        ({**BASE, b"attempt": b"x"}, "attempt"),
        ({**BASE, b"attempt": b"0"}, "attempt"),
        ({**BASE, b"attempt": b"-1"}, "attempt"),
        ({**BASE, b"attempt": b"1.5"}, "attempt"),
        ({**BASE, b"attempt": b" 2"}, "attempt"),
        ({**BASE, b"attempt": b"9" * 20}, "attempt"),
        ({**BASE, b"cost": b"0"}, "cost"),
        ({**BASE, b"cost": b"-3"}, "cost"),
        ({**BASE, b"enq": b"soon"}, "enq"),
        ({**BASE, b"deadline": b"-5"}, "deadline"),
        ({**BASE, b"deadline": "\u0662".encode()}, "deadline"),  # Arabic-Indic digit two
        ({**BASE, b"ct": b"pickle"}, "ct"),
        ({**BASE, b"ct": b"JSON"}, "ct"),
        ({**BASE, b"ct": "js\u00f6n".encode()}, "ct"),
        ({**BASE, b"reply": b"bad reply"}, "reply"),
        ({**BASE, b"reply": b"p{1}"}, "reply"),
        ({**BASE, b"reply": b"\xff\xfe"}, "reply"),
        ({**BASE, b"cost": b"\xff"}, "cost"),
        ({**BASE, b"priority": b"urgent"}, "priority"),
        ({**BASE, b"priority": b"HIGH"}, "priority"),
        ({**BASE, b"priority": b""}, "priority"),
        ({**BASE, b"priority": b"1"}, "priority"),
        ({**BASE, b"priority": "h\u00efgh".encode()}, "priority"),
    ],
)
def test_malformed_entries_name_the_field(fields: dict[bytes, bytes], field: str) -> None:
    with pytest.raises(MalformedEntry) as info:
        parse_entry("q", "1-0", fields)
    assert f"'{field}'" in str(info.value)


def test_entry_request_id() -> None:
    assert entry_request_id({b"id": b"a:b"}) == "a:b"
    assert entry_request_id({}) is None
    assert entry_request_id({b"id": b"\xff"}) is None
    assert entry_request_id({b"id": b"a b"}) is None


@given(st.dictionaries(st.binary(max_size=10), st.binary(max_size=20), max_size=8))
def test_parse_entry_raises_only_malformed_entry(fields: dict[bytes, bytes]) -> None:
    try:
        req = parse_entry("q", "1-0", fields)
    except MalformedEntry:
        return
    assert req.attempt >= 1
    assert req.cost >= 1
    assert req.ct in (MSGPACK, JSON)


# --- Request.expired -----------------------------------------------------------------------


def test_request_without_deadline_never_expires() -> None:
    req = Request(queue="q", entry_id="1-0", id="r", payload=b"")
    assert not req.expired(0)
    assert not req.expired(2**62)


def test_request_expires_at_its_deadline() -> None:
    req = Request(queue="q", entry_id="1-0", id="r", payload=b"", deadline=1000)
    assert not req.expired(999)
    assert req.expired(1000)
    assert req.expired(1001)


# --- replies -------------------------------------------------------------------------------


@given(
    request_id=ids,
    status=st.sampled_from(STATUSES),
    body=st.binary(max_size=200),
)
def test_reply_round_trip(request_id: str, status: str, body: bytes) -> None:
    outcome = Outcome(request_id, status, body)
    assert decode_reply(outcome.encode_reply()) == outcome


def test_reply_is_msgpack_array_of_id_status_body() -> None:
    payload = encode({"y": 2})
    data = Outcome("r1", OK, payload).encode_reply()
    assert msgpack.unpackb(data) == ["r1", "ok", payload]


def test_reply_with_binary_payload_body() -> None:
    body = bytes(range(256))
    out = decode_reply(Outcome("r1", OK, body).encode_reply())
    assert out.body == body
    assert isinstance(out.body, bytes)


@pytest.mark.parametrize("body", [b"", b"ValueError: bad", bytes(range(256)), "x\u00e9".encode()])
@pytest.mark.parametrize("status", STATUSES)
def test_decode_reply_packed_like_lua_cmsgpack(status: str, body: bytes) -> None:
    # Redis' cmsgpack packs every Lua string, binary ones included, as msgpack "str".
    data = msgpack.packb([b"r1", status.encode(), body], use_bin_type=False)
    assert data[1:2] == b"\xa2"  # fixstr, not bin
    assert decode_reply(data) == Outcome("r1", status, body)


def test_outcome_error_text() -> None:
    assert Outcome("r", ERROR, b"KeyError: 'x'").error == "KeyError: 'x'"
    assert Outcome("r", ERROR, b"bad \xff").error == "bad \ufffd"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x01",
        msgpack.packb(["r1", "ok"]),
        msgpack.packb(["r1", "ok", b"x", "extra"]),
        msgpack.packb({"id": "r1", "status": "ok", "body": b""}),
        msgpack.packb(["r1", "done", b"x"]),
        msgpack.packb(["r1", 1, b"x"]),
        msgpack.packb([1, "ok", b"x"]),
        msgpack.packb(["r1", "ok", None]),
        msgpack.packb(["r1", "ok", b"x"]) + b"\x00",
        b"\x91" * 100_000 + b"\xc0",
    ],
)
def test_garbage_replies_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_reply(data)


@given(st.binary(max_size=64))
def test_decode_reply_raises_only_value_error(data: bytes) -> None:
    try:
        out = decode_reply(data)
    except ValueError:
        return
    assert out.status in STATUSES


# --- result hashes -------------------------------------------------------------------------


def test_ok_result_fields() -> None:
    payload = encode({"y": 2})
    fields = result_fields(
        Outcome("r1", OK, payload),
        worker="w1",
        attempt=2,
        enq=10,
        start=20,
        end=30,
        batch=8,
    )
    assert fields == {
        "status": "ok",
        "payload": payload,
        "worker": "w1",
        "attempt": 2,
        "enq": 10,
        "start": 20,
        "end": 30,
        "batch": 8,
    }
    assert "ct" not in fields
    assert "error" not in fields


def test_ok_result_round_trip_with_json_content_type() -> None:
    payload = encode({"y": 2}, JSON)
    fields = result_fields(Outcome("r1", OK, payload), ct=JSON)
    assert fields["ct"] == "json"
    outcome, ct = outcome_from_result("r1", as_redis(fields))
    assert outcome == Outcome("r1", OK, payload)
    assert ct == JSON
    assert decode(outcome.body, ct) == {"y": 2}


def test_ok_result_round_trip_defaults_to_msgpack() -> None:
    payload = encode([1, 2])
    fields = result_fields(Outcome("r1", OK, payload))
    outcome, ct = outcome_from_result("r1", as_redis(fields))
    assert outcome == Outcome("r1", OK, payload)
    assert ct == MSGPACK


@pytest.mark.parametrize("status", [ERROR, EXPIRED, CANCELLED, DEAD])
def test_non_ok_result_round_trip(status: str) -> None:
    text = b"ValueError: boom"
    fields = result_fields(Outcome("r1", status, text), ct=JSON, worker="w")
    assert fields["status"] == status
    assert fields["error"] == text
    assert "payload" not in fields
    assert "ct" not in fields
    outcome, _ = outcome_from_result("r1", as_redis(fields))
    assert outcome == Outcome("r1", status, text)


@pytest.mark.parametrize("fields", [{}, {b"status": b"weird"}, {b"status": b"\xff"}])
def test_result_with_unknown_status_raises_value_error(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="status"):
        outcome_from_result("r1", fields)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("attempt", None, 1),
        ("attempt", b"", 1),
        ("attempt", b"3", 3),
        ("cost", b"1", 1),
        ("deadline", None, 0),
        ("deadline", b"0", 0),
        ("enq", b"1700000000123", 1700000000123),
        ("enq", b"9" * 19, int("9" * 19)),
        ("cost", b"0012", 12),
    ],
)
def test_one_rule_reads_every_integer_field(name: str, raw: bytes | None, expected: int) -> None:
    fields = {} if raw is None else {name.encode(): raw}
    assert integer_field(fields, name) == expected
    assert integer_field_or_default(fields, name) == expected


@pytest.mark.parametrize(
    ("name", "raw", "default"),
    [("attempt", b"0", 1), ("cost", b"0", 1), ("deadline", b"-5", 0), ("enq", b"1" * 20, 0),
     ("cost", b"x", 1), ("attempt", "٣".encode(), 1), ("cost", b"+5", 1), ("cost", b" 5", 1),
     ("enq", b"1_000", 0), ("cost", "²".encode(), 1)],
)  # fmt: skip
def test_a_bad_integer_field_is_malformed_or_its_default(
    name: str, raw: bytes, default: int
) -> None:
    with pytest.raises(MalformedEntry, match=name):
        integer_field({name.encode(): raw}, name)
    assert integer_field_or_default({name.encode(): raw}, name) == default


_INTEGER_VALUES = st.one_of(
    st.none(),
    st.sampled_from([b"", b"0", b"1", b"007", b"9" * 19, b"9" * 20, b"-1", b"1.5", b"\xd9\xa3"]),
    st.binary(max_size=21),
)


@given(_INTEGER_VALUES, _INTEGER_VALUES, _INTEGER_VALUES, _INTEGER_VALUES)
def test_parse_entry_reads_the_integers_as_integer_field_does(
    enq: bytes | None, deadline: bytes | None, attempt: bytes | None, cost: bytes | None
) -> None:
    """parse_entry's one pass over enq, deadline, attempt and cost (its common case without
    a call per field) answers what ``integer_field`` answers, the first bad one refused."""
    fields = {b"id": b"r1", b"payload": b"\x80"}
    given_values = {"enq": enq, "deadline": deadline, "attempt": attempt, "cost": cost}
    fields.update({name.encode(): raw for name, raw in given_values.items() if raw is not None})
    expected: list[int] | str = []
    try:
        expected = [integer_field(fields, name) for name in given_values]
    except MalformedEntry as exc:
        expected = str(exc)
    try:
        request = parse_entry("q", "1-0", fields)
    except MalformedEntry as exc:
        assert str(exc) == expected
    else:
        assert [request.enq, request.deadline, request.attempt, request.cost] == expected
