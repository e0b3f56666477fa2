"""The producer's pure pieces: admission arguments and replies, cancel keys, options."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from redbatch.errors import ConfigError, PayloadTooLarge, QueueFull, RedbatchError
from redbatch.producer import MapQueueFull
from redbatch.producer._core import (
    CANCEL_TTL_MS,
    DEFAULT_MAX_QUEUE_LEN,
    ProducerCore,
    check_max_queue_len,
)
from redbatch.producer.admission import Admissions
from redbatch.protocol.keys import KeySpace
from redbatch.protocol.scripts import Admission, Scripts


def test_defaults() -> None:
    core = ProducerCore()
    assert core.max_queue_len == DEFAULT_MAX_QUEUE_LEN == 100_000
    assert core.cancel_on_timeout is True
    assert core.limits.max_payload_bytes == 16 * 1024 * 1024
    assert CANCEL_TTL_MS == 3_600_000


@pytest.mark.parametrize("value", [-1, 1.0, True, "5", None])
def test_bad_max_queue_len(value: Any) -> None:
    with pytest.raises(ConfigError, match="max_queue_len"):
        check_max_queue_len(value)
    with pytest.raises(ConfigError, match="max_queue_len"):
        ProducerCore(max_queue_len=value)


@pytest.mark.parametrize("value", [0, 1, 100_000])
def test_good_max_queue_len(value: int) -> None:
    assert ProducerCore(max_queue_len=value).max_queue_len == value


def test_cancel_on_timeout_must_be_a_bool() -> None:
    assert ProducerCore(cancel_on_timeout=False).cancel_on_timeout is False
    with pytest.raises(ConfigError, match="cancel_on_timeout"):
        ProducerCore(cancel_on_timeout=1)  # type: ignore[arg-type]


def test_payload_too_large_before_any_io() -> None:
    core = ProducerCore(max_payload_bytes=1024)
    core.submission("q", b"x" * 900)
    with pytest.raises(PayloadTooLarge):
        core.submission("q", b"x" * 2000)


def test_admit_call_carries_the_bound_and_every_field() -> None:
    core = ProducerCore("ns", max_queue_len=7)
    subs = [core.submission("q", "a", request_id="r1"), core.submission("q", 2, cost=3)]
    admission = Admissions(core.producer_id).open()
    keys, argv = core.admit_call(subs, admission)
    queue_keys = KeySpace("ns").queue("q")
    assert keys == [queue_keys.stream, queue_keys.admitted(core.producer_id)]
    assert argv[:4] == [7, admission.seq, admission.low, admission.ttl_ms]
    position = 4
    for sub in subs:
        assert argv[position] == sub.timeout_ms
        n = argv[position + 1]
        assert n == 2 * len(sub.fields)
        pairs = argv[position + 2 : position + 2 + n]
        assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == sub.fields
        position += 2 + n
    assert position == len(argv)


def test_refusal_reads_the_admit_reply() -> None:
    core = ProducerCore(max_queue_len=5)
    assert core.refusal("q", [1, b"1-0", b"1-1"]) is None
    full = core.refusal("q", [0, 5])
    assert isinstance(full, QueueFull)
    assert (full.queue, full.length, full.max_queue_len) == ("q", 5, 5)
    assert core.refusal("q", [2]) is None  # answered from the stored result
    assert core.refusal("q", [3]) is None  # joined the request already waiting
    for bad in (None, [], [7], b"OK"):
        with pytest.raises(RedbatchError, match="admission"):
            core.refusal("q", bad)


def test_map_queue_full_says_what_was_admitted() -> None:
    full = QueueFull("q", 4, 5)
    nothing = MapQueueFull(full, [])
    assert isinstance(nothing, QueueFull)
    assert nothing.admitted == []
    assert str(nothing) == str(full)
    assert "nothing was added" in str(nothing)

    some = MapQueueFull(full, ["h1", "h2"])
    assert some.admitted == ["h1", "h2"]
    assert (some.queue, some.length, some.max_queue_len) == ("q", 4, 5)
    assert "the first 2 requests of this map call" in str(some)
    assert "nothing was added" not in str(some)


def test_cancel_keys() -> None:
    core = ProducerCore("ns")
    assert core.cancel_keys("q", ["a", "b"]) == ["ns:{q}:cancel:a", "ns:{q}:cancel:b"]
    with pytest.raises(ConfigError):
        core.cancel_keys("q", ["bad id"])
    with pytest.raises(ConfigError):
        core.cancel_keys("bad queue", ["a"])


ADMISSION = Admission("p1", 1, 1, 60_000)


def test_submission_carries_a_relative_timeout_and_no_clock() -> None:
    core = ProducerCore("ns")
    sub = core.submission("q", 1, timeout=2.5)
    assert sub.timeout_ms == 2500
    assert "enq" not in sub.fields
    assert "deadline" not in sub.fields
    assert core.submission("q", 1).timeout_ms == 0


def test_admit_script_stamps_enq_and_deadline_with_the_server_clock() -> None:
    client = fakeredis.FakeRedis()
    admit = Scripts(client).admit
    core = ProducerCore("ns")
    seconds, micros = client.time()
    keys, args = core.admit_call(
        [core.submission("q", 1, timeout=3), core.submission("q", 2)],
        Admissions(core.producer_id).open(),
    )
    assert admit(keys=keys, args=args)[0] == 1
    [(_, timed), (_, untimed)] = client.xrange(KeySpace("ns").queue("q").stream)
    enq = int(timed[b"enq"])
    assert abs(enq - (seconds * 1000 + micros // 1000)) < 5_000
    assert int(timed[b"deadline"]) == enq + 3000
    assert b"deadline" not in untimed
    assert b"enq" in untimed
    assert list(timed)[-1] == list(untimed)[-1] == b"payload"  # still last


def test_admit_once_stamps_with_the_server_clock_and_joins_itself_on_resend() -> None:
    client = fakeredis.FakeRedis()
    admit_once = Scripts(client).admit_once
    core = ProducerCore("ns")
    keys, args = core.admit_once_call(core.submission("q", 1, request_id="r1", timeout=2))
    assert admit_once(keys=keys, args=args)[0] == 1
    assert admit_once(keys=keys, args=args) == [3]  # a re-send: joined, not added
    [(_, fields)] = client.xrange(KeySpace("ns").queue("q").stream)
    assert int(fields[b"deadline"]) == int(fields[b"enq"]) + 2000
    assert list(fields)[-1] == b"payload"


def test_a_resent_admission_adds_nothing() -> None:
    client = fakeredis.FakeRedis()
    admit = Scripts(client).admit
    core = ProducerCore("ns")
    admissions = Admissions(core.producer_id)
    first = admissions.open()
    keys, args = core.admit_call([core.submission("q", i) for i in range(3)], first)
    assert admit(keys=keys, args=args)[0] == 1
    assert admit(keys=keys, args=args) == [4]  # the same admission sent again
    assert core.refusal("q", [4]) is None
    assert client.xlen(KeySpace("ns").queue("q").stream) == 3
    admissions.close(first)
    second = admissions.open()
    assert second.low == second.seq  # nothing older in flight: the set forgets the first
    keys, args = core.admit_call([core.submission("q", 9)], second)
    assert admit(keys=keys, args=args)[0] == 1
    applied = client.zrange(keys[1], 0, -1)
    assert applied == [str(second.seq).encode()]


def test_admissions_low_water_mark_is_the_oldest_in_flight() -> None:
    admissions = Admissions("p1")
    a, b = admissions.open(), admissions.open()
    assert (a.seq, b.seq, b.low) == (1, 2, 1)
    admissions.close(b)
    c = admissions.open()
    assert c.low == 1
    admissions.close(a)
    admissions.close(c)
    assert admissions.open().low == 4


def test_leave_cancels_only_for_the_last_waiter() -> None:
    client = fakeredis.FakeRedis()
    scripts = Scripts(client)
    keys_of = KeySpace("ns").queue("q")
    one, two = ProducerCore("ns"), ProducerCore("ns")
    client.sadd(keys_of.guard("r1"), one.producer_id, two.producer_id)
    keys, args = one.leave_call("q", "r1")
    assert scripts.leave(keys=keys, args=args) == 0
    assert not client.exists(keys_of.cancel("r1"))
    keys, args = two.leave_call("q", "r1")
    assert scripts.leave(keys=keys, args=args) == 1
    assert client.exists(keys_of.cancel("r1"))
    assert client.exists(keys_of.guard("r1"))  # still guarded: a later submit joins
    keys, args = one.leave_call("q", "r2")  # no guard: it has its outcome already
    assert scripts.leave(keys=keys, args=args) == 0
    assert not client.exists(keys_of.cancel("r2"))


# -- admit.lua with what the core builds (fakeredis runs the Lua) ------------------------------


def test_admit_script_is_all_or_nothing_at_the_bound() -> None:
    client = fakeredis.FakeRedis()
    admit = Scripts(client).admit
    core = ProducerCore("ns", max_queue_len=5)
    stream = KeySpace("ns").queue("q").stream

    admissions = Admissions(core.producer_id)

    def send(n: int) -> QueueFull | None:
        subs = [core.submission("q", i) for i in range(n)]
        keys, args = core.admit_call(subs, admissions.open())
        return core.refusal("q", admit(keys=keys, args=args))

    assert send(4) is None
    refused = send(2)
    assert refused is not None
    assert refused.length == 4
    assert client.xlen(stream) == 4
    assert send(1) is None
    assert client.xlen(stream) == 5
    assert send(1) is not None
    [(_, fields)] = client.xrange(stream, count=1)
    assert set(fields) >= {b"id", b"reply", b"enq", b"payload"}


# -- priorities: each request goes to its lane's stream, each lane bounded by itself -----------


def test_submission_carries_its_priority_and_field() -> None:
    core = ProducerCore("ns")
    normal = core.submission("q", "a")
    assert normal.priority == "normal"
    assert "priority" not in normal.fields
    high = core.submission("q", "a", priority="high")
    assert high.priority == "high"
    assert high.fields["priority"] == "high"
    assert list(high.fields)[-1] == "payload"


@pytest.mark.parametrize("priority", ["urgent", "HIGH", "", None, 1])
def test_invalid_priority_is_a_config_error_before_encoding(priority: Any) -> None:
    core = ProducerCore("ns", max_payload_bytes=1024)
    with pytest.raises(ConfigError, match="priority"):
        core.submission("q", b"x" * 2000, priority=priority)  # too large too: priority first


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_admit_calls_target_the_lane(priority: str) -> None:
    core = ProducerCore("ns", max_queue_len=7)
    lane = KeySpace("ns").queue("q").stream_for(priority)
    keys, _ = core.admit_call([core.submission("q", 1, priority=priority)], ADMISSION)
    assert keys[0] == lane
    keys, argv = core.admit_once_call(core.submission("q", 1, request_id="r1", priority=priority))
    assert keys[0] == lane
    assert argv[0] == 7


def test_one_admission_refuses_mixed_priorities() -> None:
    core = ProducerCore("ns")
    subs = [core.submission("q", 1), core.submission("q", 2, priority="high")]
    with pytest.raises(ValueError, match="one priority"):
        core.admit_call(subs, ADMISSION)


def test_queue_full_names_the_lane() -> None:
    core = ProducerCore(max_queue_len=5)
    full = core.refusal("q", [0, 5], "high")
    assert full is not None
    assert full.priority == "high"
    assert "of priority high" in str(full)
    assert MapQueueFull(full, ["h"]).priority == "high"
    assert "of priority high" in str(MapQueueFull(full, ["h"]))
    plain = core.refusal("q", [0, 5])
    assert plain is not None
    assert plain.priority == "normal"
    assert "priority" not in str(plain)


def test_admission_bounds_each_lane_by_itself() -> None:
    client = fakeredis.FakeRedis()
    admit = Scripts(client).admit
    core = ProducerCore("ns", max_queue_len=3)
    keys_of = KeySpace("ns").queue("q")

    admissions = Admissions(core.producer_id)

    def send(n: int, priority: str) -> QueueFull | None:
        subs = [core.submission("q", i, priority=priority) for i in range(n)]
        keys, args = core.admit_call(subs, admissions.open())
        return core.refusal("q", admit(keys=keys, args=args), priority)

    assert send(3, "low") is None
    refused = send(1, "low")
    assert refused is not None
    assert (refused.length, refused.priority) == (3, "low")
    # a full low lane refuses nothing of the others
    assert send(3, "high") is None
    assert send(3, "normal") is None
    assert [client.xlen(s) for s in keys_of.streams] == [3, 3, 3]
    [(_, fields)] = client.xrange(keys_of.stream_for("high"), count=1)
    assert fields[b"priority"] == b"high"
    [(_, fields)] = client.xrange(keys_of.stream, count=1)
    assert b"priority" not in fields
