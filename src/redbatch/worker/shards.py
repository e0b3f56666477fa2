"""Which physical queues (queues and their shards) a worker serves, kept up to date.

A worker is configured with queue names; a sharded queue's shards are found in its config
hash (``protocol.shards``) at start and re-read every ``REFRESH_S``, so shards added while
the worker runs are served within that time (shards are only ever added, never removed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redbatch.protocol.keys import KeySpace
from redbatch.protocol.shards import REFRESH_S, SHARDS_FIELD, parse_shards, served_names

log = logging.getLogger(__name__)


class ShardWatch:
    """The shard counts of a worker's queues, re-read when due (the caller's loop asks)."""

    def __init__(
        self,
        keyspace: KeySpace,
        queues: tuple[str, ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyspace = keyspace
        self._queues = queues
        self._clock = clock
        self._counts = dict.fromkeys(queues, 1)
        self._read_at: float | None = None

    def served(self) -> tuple[str, ...]:
        """Every physical queue to serve, each queue's in order."""
        return tuple(n for q in self._queues for n in served_names(q, self._counts[q]))

    def due(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= REFRESH_S

    def read(self, client: Any) -> tuple[str, ...]:
        """Re-read every queue's shard count (one pipeline); returns the physical queues to
        serve. A count that went down is ignored (``redbatch queue`` refuses to shrink; a
        hand edit must not leave shards unserved)."""
        self._read_at = self._clock()  # also when the read fails: next try after REFRESH_S
        pipe = client.pipeline(transaction=False)
        for queue in self._queues:
            pipe.hmget(self._keyspace.config(queue), [SHARDS_FIELD])  # ACL: see read_shards
        for queue, row in zip(self._queues, pipe.execute(), strict=True):
            count = parse_shards(queue, row[0])
            if count > self._counts[queue]:
                log.info(
                    "queue %s has %d shards: serving all of them", queue, count,
                    extra={"event": "shards_found", "queue": queue, "shards": count},
                )  # fmt: skip
                self._counts[queue] = count
        return self.served()
