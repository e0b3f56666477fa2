"""Parsing HELLO replies into server features, and which commands each server implies."""

from __future__ import annotations

import pytest

from redbatch.transport.capabilities import ServerFeatures, features_of


def test_a_resp2_hello_reply_is_read_as_pairs() -> None:
    reply = [b"server", b"valkey", b"version", b"8.1.1", b"proto", 2, b"modules", []]
    assert features_of(reply) == ServerFeatures("valkey", (8, 1, 1))


def test_a_parsed_hello_reply_is_read_as_a_dict() -> None:
    reply = {b"server": b"redis", b"version": b"8.0.2", b"proto": 3}
    assert features_of(reply) == ServerFeatures("redis", (8, 0, 2))


def test_a_reply_without_name_or_version_is_unknown() -> None:
    features = features_of({})
    assert features == ServerFeatures("unknown", ())
    assert not features.hsetex_fnx and not features.xackdel
    assert features.describe() == "unknown ?"


@pytest.mark.parametrize(
    ("server", "version", "hsetex", "xackdel", "text"),
    [
        ("redis", (7, 0, 15), False, False, "redis 7.0.15"),
        ("redis", (7, 4, 2), False, False, "redis 7.4.2"),
        ("redis", (8, 0, 2), True, False, "redis 8.0.2 (HSETEX)"),
        ("redis", (8, 2, 0), True, True, "redis 8.2.0 (HSETEX, XACKDEL)"),
        # Valkey reports its own version; its 8.x has neither command.
        ("valkey", (8, 1, 1), False, False, "valkey 8.1.1"),
    ],
)
def test_newer_commands_follow_server_and_version(
    server: str, version: tuple[int, ...], hsetex: bool, xackdel: bool, text: str
) -> None:
    features = ServerFeatures(server, version)
    assert (features.hsetex_fnx, features.xackdel) == (hsetex, xackdel)
    assert features.describe() == text
