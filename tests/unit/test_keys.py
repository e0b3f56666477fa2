"""Key names of wire contract v1 (docs/wire-contract.md, 'Keys')."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redbatch.errors import ConfigError
from redbatch.protocol.keys import (
    DEFAULT_PRIORITY,
    GROUP,
    PRIORITIES,
    KeySpace,
    check_priority,
    check_queue_name,
    check_request_id,
)

QUEUE_ALPHABET = "abcXYZ0189_.-"
ID_ALPHABET = QUEUE_ALPHABET + ":"


def test_default_namespace_builds_contract_names() -> None:
    ks = KeySpace()
    q = ks.queue("echo")
    assert ks.queues == "rb:queues"
    assert q.stream == "rb:{echo}:stream"
    assert q.result("r1") == "rb:{echo}:result:r1"
    assert q.reply("p1") == "rb:{echo}:reply:p1"
    assert q.dead == "rb:{echo}:dead"
    assert q.delayed == "rb:{echo}:delayed"
    assert q.cancel("r1") == "rb:{echo}:cancel:r1"
    assert q.worker("w1") == "rb:{echo}:worker:w1"
    assert GROUP == "workers"


def test_custom_namespace_prefixes_every_key() -> None:
    ks = KeySpace("tenant-a")
    q = ks.queue("img.v2")
    assert ks.queues == "tenant-a:queues"
    keys = [q.stream, q.dead, q.delayed, q.result("x"), q.reply("p"), q.cancel("x"), q.worker("w")]
    for key in keys:
        assert key.startswith("tenant-a:{img.v2}:")


def test_every_queue_key_carries_the_hash_tag() -> None:
    q = KeySpace().queue("Q_1")
    keys = [
        *q.streams,
        q.dead,
        q.delayed,
        q.result("a:b"),
        q.reply("p"),
        q.cancel("a"),
        q.worker("w"),
    ]
    for key in keys:
        # Redis Cluster hashes the text between the first '{' and the next '}'.
        assert re.search(r"\{([^}]*)\}", key).group(1) == "Q_1"  # type: ignore[union-attr]


def test_priority_lanes_are_streams_of_the_queue() -> None:
    q = KeySpace().queue("echo")
    assert PRIORITIES == ("high", "normal", "low")
    assert DEFAULT_PRIORITY == "normal"
    # normal is the contract's stream: entries added there by hand keep working
    assert q.stream_for("normal") == q.stream == "rb:{echo}:stream"
    assert q.stream_for("high") == "rb:{echo}:stream:high"
    assert q.stream_for("low") == "rb:{echo}:stream:low"
    assert q.streams == ("rb:{echo}:stream:high", "rb:{echo}:stream", "rb:{echo}:stream:low")


def test_lane_streams_follow_the_namespace() -> None:
    q = KeySpace("tenant-a").queue("img.v2")
    assert q.streams == tuple(q.stream_for(p) for p in PRIORITIES)
    assert all(s.startswith("tenant-a:{img.v2}:stream") for s in q.streams)
    assert len(set(q.streams)) == len(PRIORITIES)


@pytest.mark.parametrize("priority", PRIORITIES)
def test_check_priority_accepts_each_priority(priority: str) -> None:
    assert check_priority(priority) == priority


@pytest.mark.parametrize("priority", ["", "HIGH", "urgent", "normal ", None, 1, b"high"])
def test_invalid_priority_raises_config_error_listing_the_valid_ones(priority: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid priority.*high, normal, low") as info:
        check_priority(priority)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="priority"):
        KeySpace().queue("q").stream_for(priority)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["", "a" * 65, "has space", "br{ace", "br}ace", "co:lon", "slash/", "é", "tab\t", "nl\n"],
)
def test_invalid_queue_names_raise_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="queue name"):
        KeySpace().queue(name)
    with pytest.raises(ConfigError):
        check_queue_name(name)


@pytest.mark.parametrize("name", [None, 5, b"echo"])
def test_non_string_queue_name_raises_config_error(name: object) -> None:
    with pytest.raises(ConfigError):
        check_queue_name(name)  # type: ignore[arg-type]


def test_queue_name_length_bounds() -> None:
    assert check_queue_name("a") == "a"
    assert check_queue_name("a" * 64) == "a" * 64


@pytest.mark.parametrize(
    "namespace", ["", "a" * 33, "r:b", "r{b}", "r b", "ü", "x\n", None, 3, b"rb"]
)
def test_invalid_namespaces_raise_config_error(namespace: object) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        KeySpace(namespace)  # type: ignore[arg-type]


def test_namespace_length_bound() -> None:
    assert KeySpace("n" * 32).queues == "n" * 32 + ":queues"


@pytest.mark.parametrize(
    "request_id", ["", "x" * 129, "sp ace", "{r}", "r/1", "ü", "r\n", None, 7, b"r1"]
)
def test_invalid_request_ids_raise_config_error(request_id: object) -> None:
    with pytest.raises(ConfigError, match="request id"):
        check_request_id(request_id)  # type: ignore[arg-type]


def test_request_id_accepts_colons_and_max_length() -> None:
    assert check_request_id("job:42:a-b_c.d") == "job:42:a-b_c.d"
    assert check_request_id("x" * 128) == "x" * 128


@given(st.text(min_size=1, max_size=64))
def test_queue_name_accepted_iff_in_alphabet(name: str) -> None:
    allowed = all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    if allowed:
        assert KeySpace().queue(name).stream == f"rb:{{{name}}}:stream"
    else:
        with pytest.raises(ConfigError):
            KeySpace().queue(name)


@given(st.text(alphabet=QUEUE_ALPHABET, min_size=1, max_size=64))
def test_valid_queue_names_always_accepted(name: str) -> None:
    assert KeySpace().queue(name).name == name


@given(st.text(min_size=1, max_size=128))
def test_request_id_accepted_iff_in_alphabet(request_id: str) -> None:
    allowed = all(c.isascii() and (c.isalnum() or c in "_.:-") for c in request_id)
    if allowed:
        assert check_request_id(request_id) == request_id
    else:
        with pytest.raises(ConfigError):
            check_request_id(request_id)


@given(st.text(alphabet=ID_ALPHABET, min_size=129, max_size=200))
def test_request_id_too_long_rejected(request_id: str) -> None:
    with pytest.raises(ConfigError):
        check_request_id(request_id)


@given(st.text(min_size=0, max_size=40))
def test_namespace_accepted_iff_in_alphabet(namespace: str) -> None:
    allowed = 1 <= len(namespace) <= 32 and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in namespace
    )
    if allowed:
        assert KeySpace(namespace).queues == f"{namespace}:queues"
    else:
        with pytest.raises(ConfigError):
            KeySpace(namespace)
