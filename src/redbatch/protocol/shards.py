"""A queue's shard count, as stored in ``rb:{Q}:config`` and read by every party.

``shards`` missing (or no config at all) means 1: today's unsharded keys. A party reads the
count when it first uses a queue and again every ``REFRESH_S``: a change propagates to every
producer, worker and scheduler within that time. Only growing is allowed (``redbatch queue``
refuses to shrink): a producer that still uses the old count for a few seconds then only adds
to shards that keep being served. For the same reason a sharded queue's workers also serve
its unsharded keys ``rb:{Q}:...`` (``served_names``), where producers that knew it as a
plain queue may still have added requests.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from redbatch.errors import ConfigError
from redbatch.protocol.keys import KeySpace, check_shard_count, shard_names

SHARDS_FIELD = "shards"
# How often a party re-reads a queue's shard count (s).
REFRESH_S = 5.0


def parse_shards(queue: str, raw: Any) -> int:
    """The shard count stored for ``queue`` (HGET reply); ConfigError for a value no tool of
    ours writes, so a hand-edited config fails loudly rather than silently serving 1 shard."""
    if raw is None:
        return 1
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        return check_shard_count(int(text))
    except (ValueError, ConfigError):
        raise ConfigError(
            f"queue {queue}: invalid shards value {text!r} in its config hash"
        ) from None


def served_names(queue: str, shards: int) -> tuple[str, ...]:
    """The physical queues of ``queue`` that workers serve and ``get_result``/``cancel``
    search: its shards, and its own unsharded keys first when it has more than one."""
    names = shard_names(queue, shards)
    return names if shards == 1 else (queue, *names)


def read_shards(client: Any, keyspace: KeySpace, queue: str) -> int:
    """The shard count of ``queue`` (a sync client; redis errors propagate). HMGET, not
    HGET: the producer's and worker's minimal ACL users (docs/security.md) have HMGET."""
    return parse_shards(queue, client.hmget(keyspace.config(queue), [SHARDS_FIELD])[0])


async def read_shards_async(client: Any, keyspace: KeySpace, queue: str) -> int:
    raw = (await client.hmget(keyspace.config(queue), [SHARDS_FIELD]))[0]
    return parse_shards(queue, raw)


def shard_of_key(shard_key: str | bytes, shards: int) -> int:
    """The shard a caller's key maps to: CRC-32 modulo the count, the same in every process
    and language (``zlib.crc32`` is the standard IEEE CRC-32)."""
    data = shard_key.encode() if isinstance(shard_key, str) else shard_key
    return zlib.crc32(data) % shards


class ShardRouter:
    """A producer's view of its queues' shard counts, and where its next requests go.

    Round-robin per call (``map`` spreads its chunks); a ``shard_key`` picks by hash. No I/O:
    the caller reads the count when ``stale`` says so and gives it to ``update``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._known: dict[str, tuple[int, float, Iterator[int]]] = {}

    def stale(self, queue: str) -> bool:
        known = self._known.get(queue)
        return known is None or self._clock() - known[1] >= REFRESH_S

    def update(self, queue: str, shards: int) -> None:
        known = self._known.get(queue)
        turn = known[2] if known is not None else itertools.count()
        self._known[queue] = (check_shard_count(shards), self._clock(), turn)

    def known(self, queue: str) -> bool:
        """Whether a shard count of ``queue`` was read before (however old)."""
        return queue in self._known

    def shards(self, queue: str) -> int:
        known = self._known.get(queue)
        return 1 if known is None else known[0]

    def pick(self, queue: str, count: int = 1, shard_key: str | bytes | None = None) -> list[str]:
        """Physical queue names for ``count`` consecutive admissions to ``queue``."""
        shards = self.shards(queue)
        names = shard_names(queue, shards)
        if shards == 1:
            return [names[0]] * count
        if shard_key is not None:
            return [names[shard_of_key(shard_key, shards)]] * count
        # next() on itertools.count is atomic under the GIL: threads sharing a producer
        # each get their own turns.
        turn = self._known[queue][2]
        return [names[next(turn) % shards] for _ in range(count)]
