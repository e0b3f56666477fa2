"""Priority lanes on the Redis side, against the private redis-server.

A queue has one stream per priority: ``rb:{Q}:stream:high``, ``rb:{Q}:stream`` (normal, the
wire contract's stream) and ``rb:{Q}:stream:low``, each with the group ``workers``. These tests
cover what the producer, the writer (used directly, as a worker would) and the scheduler do
with them; a worker process reading the lanes is only needed by the last one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgpack
import pytest
import redis

from helpers.entries import WAIT_S, queue_keys
from helpers.workers import WorkerProcess, wait_until
from redbatch import AsyncProducer, Producer
from redbatch.config import SchedulerConfig
from redbatch.errors import ConfigError, QueueFull, ResultTimeout
from redbatch.protocol.fields import ERROR, OK, Outcome, build_entry, entry_key, parse_entry
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.scripts import delayed_member
from redbatch.scheduler.upkeep import Upkeep
from redbatch.worker.executor import Ran
from redbatch.worker.reader import RawEntry
from redbatch.worker.writer import Malformed, Writer

Factory = Callable[..., WorkerProcess]


def lane(client: redis.Redis, keys: QueueKeys, priority: str) -> list[dict[bytes, bytes]]:
    """The fields of every entry of one lane, oldest first."""
    return [fields for _entry_id, fields in client.xrange(keys.stream_for(priority))]


def lane_ids(client: redis.Redis, keys: QueueKeys) -> dict[str, list[str]]:
    """Request ids per lane."""
    return {p: [f[b"id"].decode() for f in lane(client, keys, p)] for p in PRIORITIES}


def pending(client: redis.Redis, keys: QueueKeys) -> dict[str, int]:
    return {p: int(client.xpending(keys.stream_for(p), GROUP)["pending"]) for p in PRIORITIES}


def consumers(client: redis.Redis, keys: QueueKeys) -> dict[str, set[str]]:
    return {
        p: {c["name"].decode() for c in client.xinfo_consumers(keys.stream_for(p), GROUP)}
        for p in PRIORITIES
    }


def read_lanes(client: redis.Redis, keys: QueueKeys, consumer: str) -> list[RawEntry]:
    """Read everything new from every lane as ``consumer``, as a worker's reader does."""
    priority_of = {keys.stream_for(p).encode(): p for p in PRIORITIES}
    reply = client.xreadgroup(GROUP, consumer, {s: ">" for s in keys.streams})
    return [
        RawEntry(keys.name, entry_id.decode(), fields, priority_of[stream])
        for stream, entries in reply or []
        for entry_id, fields in entries
    ]


def by_key(entries: list[RawEntry]) -> dict[str, RawEntry]:
    """Entries by lane and id, as the writer wants them: ids repeat across lanes."""
    return {entry_key(e.priority, e.entry_id): e for e in entries}


def writer(client: redis.Redis, namespace: str, name: str = "w1") -> Writer:
    return Writer(client, KeySpace(namespace), name, result_ttl_s=60, dead_maxlen=1000)


def ran(entry: RawEntry, *, retry: bool = False) -> Ran:
    """The request of ``entry`` run: echoed, or asking for a retry in 10 ms."""
    request = parse_entry(entry.queue, entry.entry_id, entry.fields, lane=entry.priority)
    now = int(time.time() * 1000)
    if retry:
        outcome = Outcome(request.id, ERROR, b"Retry: model warming up")
        return Ran(request, outcome, now, now, 1, retry=True, retry_delay_s=0.01)
    return Ran(request, Outcome(request.id, OK, request.payload), now, now, 1)


def upkeep(client: redis.Redis, namespace: str, **options: int) -> Upkeep:
    return Upkeep(client, SchedulerConfig(namespace=namespace), **options)


# -- producers --------------------------------------------------------------------------------


def test_producer_writes_each_priority_to_its_lane_with_the_field(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer(redis_client, namespace=namespace) as producer:
        high = producer.submit(queue, "h", priority="high")
        normal = producer.submit(queue, "n")
        low = producer.submit(queue, "l", priority="low", cost=2)
        with pytest.raises(ResultTimeout):  # nothing serves: the map times out
            producer.map(queue, ["m1", "m2"], priority="low", timeout=0.2)
    assert lane_ids(redis_client, keys)["high"] == [high.id]
    assert lane_ids(redis_client, keys)["normal"] == [normal.id]
    assert lane_ids(redis_client, keys)["low"][0] == low.id
    assert len(lane(redis_client, keys, "low")) == 3
    [high_fields] = lane(redis_client, keys, "high")
    assert high_fields[b"priority"] == b"high"
    [normal_fields] = lane(redis_client, keys, "normal")
    assert b"priority" not in normal_fields  # the default is left out
    assert all(f[b"priority"] == b"low" for f in lane(redis_client, keys, "low"))
    assert all(list(f)[-1] == b"payload" for p in PRIORITIES for f in lane(redis_client, keys, p))


def test_async_producer_writes_each_priority_to_its_lane(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = KeySpace(namespace).queue(queue)

    async def main() -> list[str]:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            handles = [
                await producer.submit(queue, "h", priority="high"),
                await producer.submit(queue, "n", priority="normal"),
                await producer.submit(queue, "l", priority="low"),
            ]
            with pytest.raises(ResultTimeout):
                await producer.call(queue, "c", priority="high", timeout=0.2)
            return [h.id for h in handles]

    high_id, normal_id, low_id = asyncio.run(main())
    ids = lane_ids(redis_client, keys)
    assert ids["high"][0] == high_id
    assert len(ids["high"]) == 2
    assert ids["normal"] == [normal_id]
    assert ids["low"] == [low_id]
    assert lane(redis_client, keys, "low")[0][b"priority"] == b"low"


def test_invalid_priority_sends_nothing(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    with Producer(redis_client, namespace=namespace) as producer:
        with pytest.raises(ConfigError, match="high, normal, low"):
            producer.submit(queue, "x", priority="urgent")
        with pytest.raises(ConfigError, match="priority"):
            producer.call(queue, "x", priority="HIGH", timeout=1)
        with pytest.raises(ConfigError, match="priority"):
            producer.map(queue, ["x"], priority="1")
        with pytest.raises(ConfigError, match="priority"):
            producer.map(queue, [], priority="")

    async def main() -> None:
        async with AsyncProducer.from_url(redis_url, namespace=namespace) as producer:
            with pytest.raises(ConfigError, match="priority"):
                await producer.submit(queue, "x", priority="urgent")
            with pytest.raises(ConfigError, match="priority"):
                await producer.map(queue, ["x"], priority="urgent")

    asyncio.run(main())
    assert redis_client.keys(f"{namespace}:*") == []  # not even the queue was created


def test_creating_a_queue_creates_the_group_on_every_lane(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    queue_keys(redis_client, namespace, queue)  # twice is harmless
    for stream in keys.streams:
        [group] = redis_client.xinfo_groups(stream)
        assert group["name"] == GROUP.encode()
        assert group["last-delivered-id"] == b"0-0"
    assert redis_client.smembers(KeySpace(namespace).queues) == {queue.encode()}


def test_admission_bounds_each_lane_by_itself(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer(redis_client, namespace=namespace, max_queue_len=2) as producer:
        producer.submit(queue, 1, priority="low")
        producer.submit(queue, 2, priority="low")
        with pytest.raises(QueueFull) as info:
            producer.submit(queue, 3, priority="low")
        assert (info.value.priority, info.value.length) == ("low", 2)
        # a full low lane refuses nothing of the others
        producer.submit(queue, 4, priority="high")
        producer.submit(queue, 5, priority="high")
        producer.submit(queue, 6)
        with pytest.raises(QueueFull):
            producer.submit(queue, 7, priority="high", id="job-7")  # idempotent submit too
    assert {p: len(ids) for p, ids in lane_ids(redis_client, keys).items()} == {
        "high": 2, "normal": 1, "low": 2,
    }  # fmt: skip


def test_idempotent_submit_in_the_high_lane_runs_once_and_tells_every_producer(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with (
        Producer.from_url(redis_url, namespace=namespace) as first,
        Producer.from_url(redis_url, namespace=namespace) as second,
    ):
        one = first.submit(queue, "x", id="job-1", priority="high")
        two = second.submit(queue, "x", id="job-1", priority="high")
        assert lane_ids(redis_client, keys) == {"high": ["job-1"], "normal": [], "low": []}
        entries = read_lanes(redis_client, keys, "w1")
        assert [e.priority for e in entries] == ["high"]
        writer(redis_client, namespace).finish(
            queue, [ran(e) for e in entries], [], by_key(entries)
        )
        assert one.result(WAIT_S) == "x"
        assert two.result(WAIT_S) == "x"
        # a third submit of the finished id is answered from the stored result
        assert first.submit(queue, "x", id="job-1", priority="low").result(WAIT_S) == "x"
    assert lane_ids(redis_client, keys) == {"high": [], "normal": [], "low": []}


# -- the writer (what a worker does with a batch that mixes lanes) ------------------------------


def test_writer_finishes_a_batch_that_mixes_lanes(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = KeySpace(namespace).queue(queue)
    with Producer(redis_client, namespace=namespace) as producer:
        handles = {p: producer.submit(queue, p, priority=p) for p in PRIORITIES}
        redis_client.xadd(keys.stream_for("low"), {"id": "bad1", "cost": "0", "payload": "x"})
        entries = read_lanes(redis_client, keys, "w1")
        assert sorted(e.priority for e in entries) == ["high", "low", "low", "normal"]
        bad = [e for e in entries if e.fields[b"id"] == b"bad1"]
        good = [e for e in entries if e not in bad]
        malformed = [Malformed(bad[0], "field 'cost' must be an integer >= 1, got '0'")]
        existed = writer(redis_client, namespace).finish(
            queue, [ran(e) for e in good], malformed, by_key(entries)
        )
        assert existed == 0
        assert {p: h.result(WAIT_S) for p, h in handles.items()} == {p: p for p in PRIORITIES}
    assert pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
    assert [redis_client.xlen(s) for s in keys.streams] == [0, 0, 0]  # acked and deleted
    [(_, dead)] = redis_client.xrange(keys.dead)
    assert dead[b"id"] == b"bad1"
    assert redis_client.hget(keys.result("bad1"), "status") == b"dead"


def test_writer_hands_back_each_entry_to_its_own_lane(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    for p in PRIORITIES:
        redis_client.xadd(keys.stream_for(p), build_entry(f"{p}1", b"\xa1x", priority=p))  # type: ignore[arg-type]
    entries = read_lanes(redis_client, keys, "w1")
    assert len(entries) == 3
    assert writer(redis_client, namespace).hand_back(entries) == 3
    assert pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
    assert lane_ids(redis_client, keys) == {p: [f"{p}1"] for p in PRIORITIES}
    # new entries (new ids), at the same attempt
    fresh = set(by_key(read_lanes(redis_client, keys, "w2")))
    assert len(fresh) == 3
    assert not fresh & set(by_key(entries))


def test_delayed_retries_come_back_into_their_own_lane(
    scheduler_factory: Factory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    redis_client.xadd(keys.stream_for("high"), build_entry("h1", b"\xa1x", priority="high"))  # type: ignore[arg-type]
    redis_client.xadd(keys.stream, build_entry("n1", b"\xa1y"))  # type: ignore[arg-type]
    # added by hand to the low lane without the field: the lane it sat in is remembered
    redis_client.xadd(keys.stream_for("low"), {"id": "l1", "payload": b"\xa1z"})
    entries = read_lanes(redis_client, keys, "w1")
    writer(redis_client, namespace).finish(
        queue, [ran(e, retry=True) for e in entries], [], by_key(entries)
    )
    assert redis_client.zcard(keys.delayed) == 3
    assert [redis_client.xlen(s) for s in keys.streams] == [0, 0, 0]
    assert pending(redis_client, keys) == {p: 0 for p in PRIORITIES}

    scheduler_factory()
    wait_until(lambda: redis_client.zcard(keys.delayed) == 0, WAIT_S, "the retries moved")
    assert lane_ids(redis_client, keys) == {"high": ["h1"], "normal": ["n1"], "low": ["l1"]}
    [high] = lane(redis_client, keys, "high")
    assert (high[b"attempt"], high[b"priority"]) == (b"2", b"high")
    [normal] = lane(redis_client, keys, "normal")
    assert normal[b"attempt"] == b"2"
    assert b"priority" not in normal
    [low] = lane(redis_client, keys, "low")
    assert (low[b"attempt"], low[b"priority"]) == (b"2", b"low")
    assert redis_client.xlen(keys.dead) == 0


def test_delayed_retry_with_unknown_priority_is_dead_lettered_and_blocks_nothing(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    now_ms = int(time.time() * 1000)
    bad = msgpack.packb(["id", "b1", "priority", "urgent", "payload", "x"], use_bin_type=False)
    good = delayed_member({b"id": b"g1", b"payload": b"\xa1x"}, 2, "low")
    # Scored before the good one: a script that failed on it would never reach g1.
    redis_client.zadd(keys.delayed, {bad: now_ms - 2000, good: now_ms - 1000})
    assert upkeep(redis_client, namespace).move_due(keys) == 1
    assert lane_ids(redis_client, keys) == {"high": [], "normal": [], "low": ["g1"]}
    assert redis_client.zcard(keys.delayed) == 0
    [(_, dead)] = redis_client.xrange(keys.dead)
    assert dead == {b"reason": b"delayed retry with unknown priority", b"member": bad}


def test_writer_keeps_entries_of_different_lanes_with_the_same_id_apart(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    """Entry ids are unique per stream only: the same id in two lanes is two requests."""
    keys = queue_keys(redis_client, namespace, queue)
    for p in PRIORITIES:
        redis_client.xadd(keys.stream_for(p), build_entry(p, b"\xa1x", priority=p), id="5-1")  # type: ignore[arg-type]
    entries = read_lanes(redis_client, keys, "w1")
    assert {e.entry_id for e in entries} == {"5-1"}
    assert len(by_key(entries)) == 3
    retry, done = (
        [e for e in entries if e.priority == "low"],
        [e for e in entries if e.priority != "low"],
    )
    runs = [ran(e) for e in done] + [ran(e, retry=True) for e in retry]
    writer(redis_client, namespace).finish(queue, runs, [], by_key(entries))
    assert {p: redis_client.hget(keys.result(p), "status") for p in PRIORITIES} == {
        "high": b"ok", "normal": b"ok", "low": None,
    }  # fmt: skip
    assert pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
    assert [redis_client.xlen(s) for s in keys.streams] == [0, 0, 0]
    [member] = redis_client.zrange(keys.delayed, 0, -1)
    flat = msgpack.unpackb(member, raw=True)
    assert dict(zip(flat[::2], flat[1::2], strict=True))[b"id"] == b"low"


# -- the scheduler ----------------------------------------------------------------------------


def fill_lanes(client: redis.Redis, keys: QueueKeys, per_lane: int) -> None:
    pipe = client.pipeline(transaction=False)
    for p in PRIORITIES:
        for i in range(per_lane):
            pipe.xadd(keys.stream_for(p), build_entry(f"{p}{i}", b"\xa1x", reply="p1", priority=p))  # type: ignore[arg-type]
    pipe.execute()


def test_dead_consumer_entries_are_requeued_in_every_lane(
    scheduler_factory: Factory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    fill_lanes(redis_client, keys, 2)
    entries = read_lanes(redis_client, keys, "ghost")
    assert len(entries) == 6
    # the ghost had started its high entries (as a worker marks a batch), not the others
    started = [e.entry_id for e in entries if e.priority == "high"]
    redis_client.xclaim(
        keys.stream_for("high"), GROUP, "ghost", 0, started, justid=True, retrycount=2
    )  # type: ignore[arg-type]
    scheduler_factory()

    wait_until(
        lambda: (
            pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
            and all(len(ids) == 2 for ids in lane_ids(redis_client, keys).values())
        ),
        WAIT_S,
        "every lane re-queued",
    )
    assert lane_ids(redis_client, keys) == {p: [f"{p}0", f"{p}1"] for p in PRIORITIES}
    for p in PRIORITIES:
        for fields in lane(redis_client, keys, p):
            assert fields.get(b"priority", b"normal") == p.encode()
            assert fields[b"attempt"] == (b"2" if p == "high" else b"1")
    assert redis_client.xlen(keys.dead) == 0


def test_hung_consumer_entries_are_requeued_in_every_lane(
    scheduler_factory: Factory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    fill_lanes(redis_client, keys, 1)
    entries = read_lanes(redis_client, keys, "busy")
    # alive (heartbeat, batch_timeout 1 s) but holding its entries "for 60 s"
    redis_client.hset(keys.worker("busy"), mapping={"batch_timeout": 1, "state": "serving"})
    redis_client.expire(keys.worker("busy"), 60)
    for e in entries:
        stream = keys.stream_for(e.priority)
        redis_client.xclaim(stream, GROUP, "busy", 0, [e.entry_id], idle=60_000, justid=True)
    scheduler_factory("--hung-margin", "0")

    wait_until(
        lambda: (
            pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
            and all(len(ids) == 1 for ids in lane_ids(redis_client, keys).values())
        ),
        WAIT_S,
        "every lane re-queued",
    )
    assert lane_ids(redis_client, keys) == {p: [f"{p}0"] for p in PRIORITIES}


def test_consumer_removal_covers_every_lane(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    redis_client.xadd(keys.stream_for("low"), build_entry("l1", b"\xa1x", priority="low"))  # type: ignore[arg-type]
    # "holder" holds one entry in the low lane only; "gone" holds nothing; both are
    # consumers of every lane's group (as after reading every lane, blocking)
    for stream in keys.streams:
        for name in ("holder", "gone"):
            redis_client.xgroup_createconsumer(stream, GROUP, name)
    assert len(read_lanes(redis_client, keys, "holder")) == 1
    assert consumers(redis_client, keys) == {p: {"holder", "gone"} for p in PRIORITIES}

    assert upkeep(redis_client, namespace, remove_after_idle_ms=-1).remove_consumers(keys) == 1
    # the holder is kept in every lane: its consumer in the other lanes is the same worker
    assert consumers(redis_client, keys) == {p: {"holder"} for p in PRIORITIES}
    assert pending(redis_client, keys) == {"high": 0, "normal": 0, "low": 1}


def test_worker_leaving_removes_its_consumer_from_every_lane(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    redis_client.xadd(keys.stream_for("high"), build_entry("h1", b"\xa1x", priority="high"))  # type: ignore[arg-type]
    for stream in keys.streams:
        redis_client.xgroup_createconsumer(stream, GROUP, "w1")
    entries = read_lanes(redis_client, keys, "w1")
    w = writer(redis_client, namespace, "w1")
    assert w.leave_group(queue) is False  # it still holds h1
    assert consumers(redis_client, keys) == {p: {"w1"} for p in PRIORITIES}
    w.hand_back(entries)
    assert w.leave_group(queue) is True
    assert consumers(redis_client, keys) == {p: set() for p in PRIORITIES}
    assert lane_ids(redis_client, keys)["high"] == ["h1"]


# -- a worker process (its reader reads every lane) ---------------------------------------------


def test_worker_serves_requests_of_every_lane(
    worker_factory: Factory, redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    worker_factory([queue])
    with Producer(redis_client, namespace=namespace) as producer:
        handles = [
            producer.submit(queue, f"{p}{i}", priority=p) for i in range(3) for p in PRIORITIES
        ]
        assert [h.result(WAIT_S) for h in handles] == [
            f"{p}{i}" for i in range(3) for p in PRIORITIES
        ]
    keys = KeySpace(namespace).queue(queue)
    assert [redis_client.xlen(s) for s in keys.streams] == [0, 0, 0]
    assert pending(redis_client, keys) == {p: 0 for p in PRIORITIES}
