"""Which queues a summary shows in detail, when there are more than its limit.

Reading a queue in detail costs ~17 commands and parsing ``XINFO`` replies: ~0.4 ms each, 4 s
for 10,000 queues. A summary reads every queue's sizes only (``XLEN`` of each lane and of its
dead letters, ``ZCARD`` of its delayed set: five plain integers), and details:

- every queue a live worker serves (its heartbeat was found) or ``rb:watch`` marked recently
  (served, or holding entries, consumers or retries by the scheduler's last probe), and
- the ``limit`` queues holding the most (entries + delayed + dead), among those holding any.

Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from redbatch.connection import Client
from redbatch.protocol.keys import KeySpace, QueueKeys

# Queues per pipeline of size reads.
_BATCH = 1000
# rb:watch marks younger than this count (the scheduler's keep time, scheduler.watch.KEEP_MS:
# not imported, ops does not depend on the scheduler).
WATCH_KEEP_MS = 30_000


@dataclass(frozen=True)
class Sizes:
    """One queue's sizes: entries in its lanes (waiting + in flight), delayed, dead."""

    length: int = 0
    delayed: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        return self.length + self.delayed + self.dead


def _int(reply: Any) -> int:
    if isinstance(reply, Exception):
        raise reply
    return int(reply or 0)


def read_sizes(client: Client, queues: list[QueueKeys]) -> dict[str, Sizes]:
    found: dict[str, Sizes] = {}
    for first in range(0, len(queues), _BATCH):
        batch = queues[first : first + _BATCH]
        pipe = client.pipeline(transaction=False)
        for keys in batch:
            for stream in keys.streams:
                pipe.xlen(stream)  # 0 for a missing stream, never an error
            pipe.zcard(keys.delayed)
            pipe.xlen(keys.dead)
        replies = iter(pipe.execute(raise_on_error=False))
        for keys in batch:
            length = sum(_int(next(replies)) for _ in keys.streams)
            found[keys.name] = Sizes(length, _int(next(replies)), _int(next(replies)))
    return found


def watched(client: Client, keyspace: KeySpace, now_ms: int) -> set[str]:
    """Queues marked in ``rb:watch`` within the keep time; none when the user may not read it
    (an operator ACL from before rb:watch)."""
    try:
        names = client.zrangebyscore(keyspace.watch, now_ms - WATCH_KEEP_MS, "+inf")
    except redis.ResponseError:
        return set()
    return {n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names}


def choose(sizes: Mapping[str, Sizes], always: Iterable[str], limit: int) -> list[str]:
    """The queue names to detail, by name: ``always`` (those known), then the ``limit``
    holding the most, ties by name."""
    chosen = {name for name in always if name in sizes}
    holding = sorted((n for n, s in sizes.items() if s.total), key=lambda n: (-sizes[n].total, n))
    chosen.update(holding[:limit])
    return sorted(chosen)
