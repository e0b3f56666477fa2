"""What the server a role talks to can do, learnt once at connect from ``HELLO``.

``HELLO`` (no arguments: the connection stays RESP2) answers the server's name and version
to every user: it needs no ACL permission, so the minimal users of each role (README
"Security") may call it, whereas ``INFO`` and ``COMMAND`` would need rules of their own.

Newer commands that could replace work the wire contract's Lua scripts do:

- ``HSETEX key FNX PX ttl FIELDS n ...`` (Redis 8.0+; not in Valkey 8.1): a write-once
  result hash with its TTL in one command, so a batch's finish could be one MULTI.
- ``XACKDEL`` (Redis 8.2+): ``XACK`` + ``XDEL`` in one command.

Both are detected, and neither is used: benchmarks/finish_paths.py measured the MULTI finish
against finish_batch.lua on Redis 8.0 and it does not pay (docs/servers.md has the numbers),
so every server runs the same scripts and a mixed fleet or an upgraded server changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

__all__ = ["ServerFeatures", "detect", "features_of"]

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ServerFeatures:
    """A server's name (``redis``, ``valkey``) and version, and the commands that implies."""

    server: str
    version: tuple[int, ...]

    @property
    def hsetex_fnx(self) -> bool:
        return self.server == "redis" and self.version >= (8, 0)

    @property
    def xackdel(self) -> bool:
        return self.server == "redis" and self.version >= (8, 2)

    def describe(self) -> str:
        """``valkey 8.1.1``; with the newer commands it has, e.g. ``redis 8.0.2 (HSETEX)``."""
        version = ".".join(map(str, self.version)) or "?"
        newer = [
            name for name, has in (("HSETEX", self.hsetex_fnx), ("XACKDEL", self.xackdel)) if has
        ]
        return f"{self.server} {version}" + (f" ({', '.join(newer)})" if newer else "")


def features_of(hello: Any) -> ServerFeatures:
    """Parse a ``HELLO`` reply (a dict from redis-py, or the flat RESP2 list)."""
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    fields = {_text(k): v for k, v in hello.items()} if isinstance(hello, dict) else {}
    version = tuple(int(p) for p in _text(fields.get("version", "")).split(".") if p.isdigit())
    return ServerFeatures(_text(fields.get("server", UNKNOWN)) or UNKNOWN, version)


def detect(client: Any) -> ServerFeatures:
    """The features of ``client``'s server; on a cluster, of its least capable primary
    (nodes may differ during a rolling upgrade). A server without ``HELLO`` (before 6.0,
    or a proxy that refuses it) counts as unknown: it gets the scripts every server runs."""
    try:
        if isinstance(client, RedisCluster):
            replies = client.execute_command(  # type: ignore[no-untyped-call]
                "HELLO", target_nodes=RedisCluster.PRIMARIES
            )
            nodes = [features_of(r) for r in replies.values()]
            return min(nodes, key=lambda f: (f.hsetex_fnx, f.xackdel, f.version))
        return features_of(client.execute_command("HELLO"))
    except redis.ResponseError:
        return ServerFeatures(UNKNOWN, ())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
