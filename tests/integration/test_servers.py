"""The server matrix: the suite runs the server REDBATCH_TEST_SERVER names, and every role
learns what that server is from HELLO, also as its minimal ACL user (no INFO, no COMMAND)."""

from __future__ import annotations

import pytest
import redis

from helpers.acl import acl_rule, has_setinfo
from helpers.servers import suite_server_name
from redbatch.embedded import EmbeddedRedis
from redbatch.transport.capabilities import detect

# What each matrix name must start: (HELLO's server name, major.minor).
EXPECTED = {"redis7": ("redis", (7, 0)), "redis8": ("redis", (8, 0)), "valkey8": ("valkey", (8, 1))}


def test_the_suite_runs_the_selected_server(redis_client: redis.Redis) -> None:
    features = detect(redis_client)
    name, version = EXPECTED[suite_server_name()]
    assert (features.server, features.version[:2]) == (name, version)


def test_minimal_users_learn_the_server_without_info(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, namespace: str
) -> None:
    expected = detect(redis_client)
    setinfo = has_setinfo(redis_client)
    for role in ("producer", "worker", "scheduler", "operator"):
        user = f"{role}-{namespace}"
        rule = acl_rule(role, "pw", namespace, setinfo=setinfo)
        redis_client.execute_command("ACL", "SETUSER", user, "reset", *rule.split())
        with redis.Redis(port=redis_server.port, username=user, password="pw") as client:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.info("server")
            assert detect(client) == expected, role
