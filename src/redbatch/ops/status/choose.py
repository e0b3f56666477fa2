"""Which queues a summary shows in detail, when there are more than its limit.

Reading a queue in detail costs ~17 commands and parsing ``XINFO`` replies: ~0.4 ms each, 4 s
for 10,000 queues. A summary reads every queue's sizes only (``XLEN`` of each lane and of its
dead letters, ``ZCARD`` of its delayed set: one ``sizes.lua`` call), and details:

- every queue a live worker serves (its heartbeat was found) or ``rb:watch`` marked recently
  (served, or holding entries, consumers or retries by the scheduler's last probe), and
- the ``limit`` queues holding the most (entries + delayed + dead), among those holding any.

Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.scripts import load_lua, sizes_args
from redbatch.transport.connection import Client

# How many queues ``redbatch status`` and the dashboard detail beyond the served ones, once
# there are more than that (``--all`` and a dashboard search read every one).
SUMMARY_ROWS = 20
# Queues per pipeline of size reads.
_BATCH = 1000
_SIZES = load_lua("sizes")
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


def read_sizes(client: Client, queues: list[QueueKeys]) -> dict[str, Sizes]:
    """Every queue's sizes: one ``sizes.lua`` call per queue (``SCRIPT LOAD`` once, then
    ``EVALSHA`` in pipelines), its five numbers in one reply."""
    sha = client.script_load(_SIZES)
    if isinstance(sha, dict):  # a cluster answers per primary, the same digest from each
        sha = next(iter(sha.values()))
    found: dict[str, Sizes] = {}
    for first in range(0, len(queues), _BATCH):
        batch = queues[first : first + _BATCH]
        pipe = client.pipeline(transaction=False)
        for keys in batch:
            script_keys = sizes_args(keys)
            pipe.evalsha(sha, len(script_keys), *script_keys)
        for keys, reply in zip(batch, pipe.execute(), strict=True):
            length, delayed, dead = (int(n) for n in reply)
            found[keys.name] = Sizes(length, delayed, dead)
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
