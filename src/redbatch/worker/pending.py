"""A live worker owns its pending list: what is pending to it in Redis, it holds in memory.

A read's reply can be lost after Redis ran the read (a connection cut mid-reply, by a load
balancer, a failover or ``CLIENT KILL``): redis-py sends the read again and gets newer
entries, and those the first read delivered sit pending to this worker, which never saw
them. Only the scheduler's hung-worker rule (batch_timeout + hung_margin: minutes) would
take them back. So at start, after every connection error the loop sees, and every
``AUDIT_INTERVAL_S`` (redis-py retries most errors unseen), the worker lists what is
pending to its consumer in every lane of every queue it serves (``XPENDING ... consumer``)
and re-queues what it holds nowhere: not read ahead, running, sent, unwritten or unstarted
(the runner says what it holds). Everything runs on the loop's thread, between turns, so
nothing is on its way between Redis and memory while the two are compared.

Re-queued as the scheduler does for a dead worker (requeue.lua, mode retry): an entry that
was started (delivery count 2) counts an attempt, one only delivered goes back as it was;
requeue.lua skips an entry no longer pending to this worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from redbatch.protocol.fields import entry_key
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace
from redbatch.worker.batch import Batch
from redbatch.worker.reader import RawEntry
from redbatch.worker.writer import Writer

log = logging.getLogger(__name__)

# How often a worker compares its pending list with what it holds: a request delivered on a
# connection that died waits about this long (plus a turn) before it is re-queued.
AUDIT_INTERVAL_S = 1.0
# Pending entries listed per XPENDING call, and re-queued per requeue.lua call.
PAGE = 500

# (physical queue, entry_key(lane, entry id)): one entry of one lane.
Key = tuple[str, str]


def held_keys(
    entries: Iterable[RawEntry], batches: Iterable[Batch | None], unstarted: Iterable[RawEntry]
) -> set[Key]:
    """Every entry the worker holds: read ahead (``entries``), in a batch anywhere on its
    way (decoded, running, sent, unwritten), or taken for a batch never started."""
    held = {(e.queue, e.lane_id) for e in entries}
    held.update((e.queue, e.lane_id) for b in batches if b is not None for e in b.entries)
    held.update((e.queue, e.lane_id) for e in unstarted)
    return held


def unheld(queue: str, priority: str, pending: list[str], held: set[Key]) -> list[str]:
    """The entry ids pending to this worker in one lane that it does not hold."""
    return [i for i in pending if (queue, entry_key(priority, i)) not in held]


class PendingAudit:
    def __init__(
        self,
        client: Any,
        keyspace: KeySpace,
        consumer: str,
        writer: Writer,
        *,
        interval_s: float = AUDIT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keyspace = keyspace
        self._consumer = consumer
        self._writer = writer
        self._interval_s = interval_s
        self._clock = clock
        self._due_at = 0.0  # at once: a worker restarted under its old name finds its own
        self.taken_back = 0

    def due(self) -> bool:
        return self._clock() >= self._due_at

    def soon(self) -> None:
        """Audit on the next turn (a connection error: a reply may have been lost)."""
        self._due_at = 0.0

    def run(self, queues: Iterable[str], held: set[Key]) -> int:
        """Re-queue every entry pending to this worker that is not in ``held``; how many."""
        self._due_at = self._clock() + self._interval_s
        taken = 0
        for (queue, priority), pending in self._pending(tuple(queues)).items():
            lost = unheld(queue, priority, pending, held)
            for start in range(0, len(lost), PAGE):
                requeued, dead = self._writer.reclaim(queue, priority, lost[start : start + PAGE])
                taken += requeued + dead
        if taken:
            self.taken_back += taken
            log.info(
                "took back %d entries pending to worker %s that it never received (a reply "
                "lost with its connection); re-queued", taken, self._consumer,
                extra={"event": "pending_taken_back", "count": taken},
            )  # fmt: skip
        return taken

    def _pending(self, queues: tuple[str, ...]) -> dict[tuple[str, str], list[str]]:
        """(queue, priority) -> ids pending to this consumer, every lane in one pipeline
        (more pages for a lane that fills one, which a healthy worker never does)."""
        lanes = [(q, p) for q in queues for p in PRIORITIES]
        pipe = self._client.pipeline(transaction=False)
        for queue, priority in lanes:
            self._list(pipe, queue, priority, "-")
        found: dict[tuple[str, str], list[str]] = {}
        for lane, first in zip(lanes, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(first, redis.ResponseError):
                continue  # no stream or group yet (NOGROUP): nothing pending there
            if isinstance(first, Exception):
                raise first
            rows = first
            ids = found[lane] = [_text(r["message_id"]) for r in rows]
            while len(rows) == PAGE:
                rows = self._list(self._client, *lane, f"({ids[-1]}")
                ids += [_text(r["message_id"]) for r in rows]
        return found

    def _list(self, target: Any, queue: str, priority: str, start: str) -> Any:
        stream = self._keyspace.queue(queue).stream_for(priority)
        return target.xpending_range(stream, GROUP, start, "+", PAGE, consumername=self._consumer)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
