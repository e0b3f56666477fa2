"""Records finished batches in Redis, without waiting for Redis when it need not.

A batch's results are sent at once and their reply is read when the next batch is recorded
(or before the loop blocks on an idle queue), so the loop runs the next batch while Redis
writes this one. A batch whose results a lost connection kept from Redis, or whose reply
was lost with it, is written again once Redis is back: the first outcome wins, so writing
twice changes nothing. An outage is logged once when it begins and once when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from redbatch.worker.batch import Batch
from redbatch.worker.executor import Ran
from redbatch.worker.writer import Sending, Writer

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, writer: Writer, counted: Callable[[Batch, list[Ran]], None]) -> None:
        """``counted(batch, ran)`` is called once per batch, when it is first sent."""
        self._writer = writer
        self._counted = counted
        # Batches the handler finished whose results a lost connection kept from Redis.
        self.unwritten: list[Batch] = []
        # The batch whose results were sent and whose reply is unread (at most one).
        self._sent: tuple[Batch, Sending] | None = None
        self._outage = False

    def record(self, batch: Batch, *, wait: bool = False) -> None:
        """Wait for the handler if need be, then send the batch's outcomes (and, with
        ``wait``, read the reply); the previous batch's reply is read first."""
        ran = batch.future.result() if batch.future is not None else []
        raw = {entry.lane_id: entry for entry in batch.entries}
        self.settle()
        self._sent = (batch, self._writer.send(batch.queue, ran, batch.malformed, raw))
        if not batch.counted:
            batch.counted = True
            self._counted(batch, ran)
        if wait:
            self.settle()

    def settle(self) -> None:
        """Read the reply of the batch sent last, if any. A refusal (ResponseError) drops
        it: its entries stay pending for the scheduler. A lost connection keeps it for
        ``lost`` to write again."""
        if self._sent is None:
            return
        batch, sending = self._sent
        try:
            existed = self._writer.settle(sending)
        except redis.ResponseError:
            self._sent = None
            raise
        self._sent = None
        batch.written = True
        if existed:
            log.info(
                "%d results on %s already existed; kept the first outcome", existed, batch.queue
            )

    def holding(self) -> list[Batch]:
        """The batches whose entries are still this worker's to record: sent, unwritten."""
        return [*self.unwritten, *([self._sent[0]] if self._sent is not None else [])]

    def rewrite(self) -> None:
        """Write what an outage kept from Redis (first thing on every turn)."""
        while self.unwritten:
            self.record(self.unwritten[0], wait=True)
            self.unwritten.pop(0)
            self.reachable()

    def lost(self, exc: Exception, running: Batch | None) -> None:
        """Redis went away: keep what it may not have written, to write again."""
        if not self._outage:
            log.warning("Redis unavailable (%s); carrying on, results kept until it is back", exc)
            self._outage = True
        if self._sent is not None:
            self._keep(self._sent[0])
            self._sent = None
        if running is not None and running.finished(0) and not running.written:
            self._keep(running)

    def reachable(self) -> None:
        if self._outage:
            log.info("Redis reachable again")
            self._outage = False

    def last(self, running: Batch | None) -> None:
        """On the way out: write what ran (waiting for the running batch to end)."""
        try:
            self.settle()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.lost(exc, None)
        except redis.ResponseError:
            log.exception("Redis refused a command; the batch stays pending")
        for batch in [*self.unwritten, *([running] if running is not None else [])]:
            try:
                self.record(batch, wait=True)
            except redis.RedisError as exc:
                log.warning(
                    "could not write a batch of %d (%s); its entries stay pending for the "
                    "scheduler", len(batch.entries), exc,
                )  # fmt: skip
        self.unwritten = []
        self._writer.close()

    def _keep(self, batch: Batch) -> None:
        if batch not in self.unwritten:
            self.unwritten.append(batch)
