"""Shard names, shard choice and the stored shard count (no Redis)."""

from __future__ import annotations

import zlib

import pytest

from redbatch.config import SchedulerConfig, parse_cluster
from redbatch.errors import ConfigError
from redbatch.protocol.keys import KeySpace, check_queue_name, logical_name, shard_names
from redbatch.protocol.shards import ShardRouter, parse_shards, served_names, shard_of_key
from redbatch.worker.shards import ShardWatch


def test_one_shard_keeps_todays_key_names_exactly() -> None:
    keyspace = KeySpace("rb")
    keys = keyspace.shard("echo", 0, 1)
    assert keys == keyspace.queue("echo")
    assert keys.stream == "rb:{echo}:stream"
    assert keys.result("r1") == "rb:{echo}:result:r1"
    assert shard_names("echo", 1) == ("echo",)


def test_shard_keys_carry_the_shard_in_the_hash_tag() -> None:
    keys = KeySpace("rb").shard("echo", 2, 3)
    assert keys.name == "echo#2"
    assert keys.stream == "rb:{echo#2}:stream"
    assert keys.stream_for("high") == "rb:{echo#2}:stream:high"
    assert keys.reply("p1") == "rb:{echo#2}:reply:p1"
    assert keys.dead == "rb:{echo#2}:dead"
    assert KeySpace("rb").config("echo") == "rb:{echo}:config"
    assert shard_names("echo", 3) == ("echo#0", "echo#1", "echo#2")
    assert logical_name("echo#2") == "echo" and logical_name("echo") == "echo"


@pytest.mark.parametrize("index", [3, -1, True])
def test_a_shard_index_out_of_range_is_refused(index: int) -> None:
    with pytest.raises(ConfigError, match="shard index"):
        KeySpace("rb").shard("echo", index, 3)


def test_users_cannot_name_a_shard_but_workers_read_them() -> None:
    with pytest.raises(ConfigError, match="invalid queue name"):
        check_queue_name("echo#1")
    assert KeySpace("rb").queue("echo#1").stream == "rb:{echo#1}:stream"
    for bad in ("echo#", "echo#01", "echo#x", "echo#1000", "#1", "a#1#2"):
        with pytest.raises(ConfigError):
            KeySpace("rb").queue(bad)


@pytest.mark.parametrize("count", [0, 257, -3, True, 2.0])
def test_a_bad_shard_count_is_a_config_error(count: object) -> None:
    with pytest.raises(ConfigError, match="invalid shard count"):
        shard_names("echo", count)  # type: ignore[arg-type]


def test_stored_counts_are_read_strictly() -> None:
    assert parse_shards("q", None) == 1
    assert parse_shards("q", b"4") == 4
    for bad in (b"", b"x", b"0", b"9999"):
        with pytest.raises(ConfigError, match="queue q: invalid shards value"):
            parse_shards("q", bad)


def test_served_names_include_the_unsharded_keys_once_sharded() -> None:
    assert served_names("q", 1) == ("q",)
    assert served_names("q", 2) == ("q", "q#0", "q#1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_router_turns_round_robin_and_across_calls() -> None:
    router = ShardRouter(Clock())
    router.update("q", 3)
    assert router.pick("q", 4) == ["q#0", "q#1", "q#2", "q#0"]
    assert router.pick("q") == ["q#1"]
    assert router.pick("other") == ["other"]  # never read: one shard


def test_router_sends_a_shard_key_always_to_the_same_shard() -> None:
    router = ShardRouter(Clock())
    router.update("q", 4)
    expected = f"q#{zlib.crc32(b'user-17') % 4}"
    assert router.pick("q", 2, "user-17") == [expected, expected]
    assert router.pick("q", 1, b"user-17") == [expected]
    assert shard_of_key("user-17", 4) == zlib.crc32(b"user-17") % 4


def test_router_knows_when_to_read_the_count_again() -> None:
    clock = Clock()
    router = ShardRouter(clock)
    assert router.stale("q")
    router.update("q", 2)
    assert not router.stale("q")
    clock.now += 5.0
    assert router.stale("q")


class FakePipe:
    def __init__(self, stored: dict[str, bytes]) -> None:
        self.stored = stored
        self.asked: list[str] = []

    def pipeline(self, transaction: bool) -> FakePipe:
        self.asked = []
        return self

    def hmget(self, key: str, fields: list[str]) -> None:
        assert fields == ["shards"]
        self.asked.append(key)

    def execute(self) -> list[list[bytes | None]]:
        return [[self.stored.get(k)] for k in self.asked]


def test_worker_watch_grows_and_never_shrinks() -> None:
    clock = Clock()
    stored: dict[str, bytes] = {}
    watch = ShardWatch(KeySpace("rb"), ("a", "b"), clock)
    assert watch.due()
    assert watch.read(FakePipe(stored)) == ("a", "b")
    assert not watch.due()
    stored["rb:{a}:config"] = b"2"
    clock.now += 5
    assert watch.due()
    assert watch.read(FakePipe(stored)) == ("a", "a#0", "a#1", "b")
    stored["rb:{a}:config"] = b"1"  # a hand edit: the shards keep being served
    assert watch.read(FakePipe(stored)) == ("a", "a#0", "a#1", "b")


@pytest.mark.parametrize(
    ("raw", "expected"), [("auto", None), ("yes", True), ("NO", False), ("1", True), ("0", False)]
)
def test_the_cluster_setting_reads_auto_yes_no(raw: str, expected: bool | None) -> None:
    assert parse_cluster(raw) is expected
    environ = {"REDBATCH_CLUSTER": raw}
    assert SchedulerConfig.from_env(environ).cluster is expected
    assert SchedulerConfig.from_env(environ, cluster=True).cluster is True  # a flag wins


def test_a_bad_cluster_setting_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="REDBATCH_CLUSTER"):
        SchedulerConfig.from_env({"REDBATCH_CLUSTER": "maybe"})
