"""The server the test session runs: ``REDBATCH_TEST_SERVER`` = redis7 (default, the system's
redis-server), redis8 or valkey8 (built on first use, see redbatch.servers).

Every private server of the suite (the session's, the ACL, TLS, outage and cluster ones)
starts with :func:`suite_server`'s ``command``, so one variable moves the whole suite.
"""

from __future__ import annotations

import functools
import os

from redbatch.servers import SYSTEM, ServerBuild, server_build

TEST_SERVER_ENV = "REDBATCH_TEST_SERVER"


def suite_server_name() -> str:
    return os.environ.get(TEST_SERVER_ENV) or SYSTEM


@functools.cache
def suite_server() -> ServerBuild:
    """The selected server (its root filesystem built once, then cached)."""
    return server_build(suite_server_name())
