"""Pure parts of the worker's fault handling: entry bounds, which refusals pass, which pending
entries a worker holds nowhere."""

from __future__ import annotations

import pytest
import redis
from redis._parsers.base import BaseParser

from redbatch.errors import MalformedEntry
from redbatch.protocol.fields import (
    MAX_ENTRY_FIELDS,
    MAX_FIELD_BYTES,
    MAX_FIELD_NAME_BYTES,
    bounded_copy,
    entry_key,
    parse_entry,
)
from redbatch.worker.batch import attempt_of
from redbatch.worker.pending import held_keys, unheld
from redbatch.worker.reader import RawEntry, held_of
from redbatch.worker.recorder import passing_refusal


def entry(**extra: bytes) -> dict[bytes, bytes]:
    return {b"id": b"r1", **{k.encode(): v for k, v in extra.items()}, b"payload": b"\x01"}


def test_an_entry_within_the_bounds_parses() -> None:
    fields = entry(**{f"f{i}": b"x" * MAX_FIELD_BYTES for i in range(MAX_ENTRY_FIELDS - 2)})
    assert parse_entry("q", "1-0", fields).id == "r1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (entry(**{f"f{i}": b"x" for i in range(MAX_ENTRY_FIELDS - 1)}), "33 fields"),
        (entry(**{"n" * (MAX_FIELD_NAME_BYTES + 1): b"x"}), "a field name of 65 bytes"),
        (entry(note=b"x" * (MAX_FIELD_BYTES + 1)), "field 'note' of 1025 bytes"),
    ],
)
def test_an_entry_past_a_bound_is_malformed(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(MalformedEntry, match=reason):
        parse_entry("q", "1-0", fields)


def test_a_large_payload_is_not_a_field_bound() -> None:
    fields = entry()
    fields[b"payload"] = b"x" * (10 * MAX_FIELD_BYTES)
    assert parse_entry("q", "1-0", fields).payload == fields[b"payload"]


def test_the_bounded_copy_keeps_room_for_the_reason_and_cuts_values_but_the_payload() -> None:
    fields = {f"f{i}".encode(): b"v" * 5000 for i in range(5000)}
    fields = {b"payload": b"p" * 5000, b"id": b"r1", **fields}
    copy = bounded_copy(fields)
    assert len(copy) == MAX_ENTRY_FIELDS - 1
    assert copy[b"payload"] == b"p" * 5000 and copy[b"id"] == b"r1"
    assert max(len(v) for k, v in copy.items() if k != b"payload") == MAX_FIELD_BYTES


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "BUSY Redis is busy running a script.",
        "MASTERDOWN Link with MASTER is down",
        "CLUSTERDOWN The cluster is down",
    ],
)
def test_refusals_that_pass(reply: str) -> None:
    exc = BaseParser.parse_error(reply)  # as redis-py builds it from the error reply
    assert isinstance(exc, redis.ResponseError) and passing_refusal(exc)


@pytest.mark.parametrize(
    "message",
    ["WRONGTYPE Operation against a key holding the wrong kind of value", "ERR script error"],
)
def test_refusals_that_do_not_pass(message: str) -> None:
    assert not passing_refusal(redis.ResponseError(message))


def test_what_a_worker_holds_nowhere_is_taken_back_per_lane() -> None:
    read = RawEntry("q", "1-0", {}, "normal")
    unstarted = RawEntry("q", "2-0", {}, "high")
    held = held_keys([read], [None], [unstarted])
    # 1-0 is held in the normal lane only; the same id in the low lane is another entry.
    assert unheld("q", "normal", ["1-0", "3-0"], held) == ["3-0"]
    assert unheld("q", "low", ["1-0"], held) == ["1-0"]
    assert unheld("q", "high", ["2-0"], held) == []
    assert unheld("q#1", "normal", ["1-0"], held) == ["1-0"]  # another shard


def test_an_entry_is_parsed_once_when_read_and_a_malformed_one_keeps_its_reason() -> None:
    """The batch former, the suspect check and the batch read the parse made on reading; a
    malformed entry's fields still count for what they can (its attempt, its defaults)."""
    fields = {b"id": b"r1", b"payload": b"\x80", b"attempt": b"2", b"cost": b"3"}
    good = RawEntry("q", "1-0", {**fields, b"deadline": b"5000"}, "high")
    assert good.request is not None and good.request.priority == "high"
    assert good.lane_id == entry_key("high", "1-0") and attempt_of(good) == 2
    held = held_of(good, 1.0, 2)
    assert (held.key, held.cost, held.deadline, held.priority) == (good.lane_id, 3, 5.0, 2)
    bad = RawEntry("q", "2-0", {b"id": b"r2", b"attempt": b"3", b"cost": b"x"}, "normal")
    assert bad.request is None and bad.malformed == "missing field 'payload'"
    assert attempt_of(bad) == 3 and held_of(bad, 1.0).cost == 1
