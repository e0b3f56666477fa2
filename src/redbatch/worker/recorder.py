"""Records finished batches in Redis, without waiting for Redis when it need not.

A batch's results are sent at once and their reply is read when the next batch is recorded
(or before the loop blocks on an idle queue), so the loop runs the next batch while Redis
writes this one. A batch whose results a lost connection kept from Redis, or whose reply
was lost with it, is written again once Redis is back: the first outcome wins, so writing
twice changes nothing. An outage is logged once when it begins and once when it ends.

A server that refuses a write for a reason that passes (out of memory under noeviction, a
replica that is read-only or loading, a busy script, a cluster slot in failover) is treated
the same way: the results are kept and written again, with backoff, once it accepts them;
one log line when the refusals begin and one when they end. Other refusals (a script
error) drop the batch: its entries stay pending and the worker's pending audit re-queues
them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from redbatch.transport.connection import refusal_code
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Ran
from redbatch.worker.writer import Sending, Writer

log = logging.getLogger(__name__)

# Rewrites after a passing refusal wait from the first to the second, doubling.
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


def passing_refusal(exc: redis.ResponseError) -> bool:
    """Whether Redis refused for a reason that passes (``connection.REFUSALS``: retry after
    a pause), not for a bad command. (LOADING is a redis-py ConnectionError: a lost
    connection already.)"""
    return refusal_code(exc) is not None


class Recorder:
    def __init__(
        self,
        writer: Writer,
        counted: Callable[[Batch, list[Ran]], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``counted(batch, ran)`` is called once per batch, when it is first sent."""
        self._writer = writer
        self._counted = counted
        self._sleep = sleep
        # After a passing refusal: when the next rewrite may go, and the next wait.
        self._retry_at = 0.0
        self._backoff_s = _BACKOFF_MIN_S
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
        """Read the reply of the batch sent last, if any. A refusal that passes keeps it to
        write again (as ``lost`` does); any other drops it: its entries stay pending (the
        pending audit re-queues them). A lost connection keeps it for ``lost``."""
        if self._sent is None:
            return
        batch, sending = self._sent
        try:
            existed = self._writer.settle(sending)
        except redis.ResponseError as exc:
            self._sent = None
            if passing_refusal(exc):
                self._keep(batch)
            raise
        self._sent = None
        batch.written = True
        if existed:
            log.info(
                "%d results on %s already existed; kept the first outcome",
                existed,
                batch.queue,
                extra={"event": "results_existed", "queue": batch.queue},
            )

    def holding(self) -> list[Batch]:
        """The batches whose entries are still this worker's to record: sent, unwritten."""
        return [*self.unwritten, *([self._sent[0]] if self._sent is not None else [])]

    def rewrite(self) -> None:
        """Write what an outage kept from Redis (first thing on every turn); after a
        refusal that passes, not before its backoff is over (no new batch starts meanwhile:
        the turn waits here)."""
        wait = self._retry_at - time.monotonic()
        if self.unwritten and wait > 0:
            self._sleep(wait)
        while self.unwritten:
            self.record(self.unwritten[0], wait=True)
            self.unwritten.pop(0)
            self.reachable()

    def lost(self, exc: Exception, running: Batch | None) -> None:
        """Redis went away: keep what it may not have written, to write again."""
        if not self._outage:
            log.warning(
                "Redis unavailable (%s); carrying on, results kept until it is back",
                exc,
                extra={"event": "redis_unavailable"},
            )
            self._outage = True
        self._keep_all(running)

    def refused(self, exc: redis.ResponseError, running: Batch | None) -> None:
        """Redis refused for a reason that passes: keep everything as for a lost connection,
        and write again after a backoff (doubling up to 2 s)."""
        if not self._outage:
            log.warning(
                "Redis refused a write (%s: %s); results kept, written again with backoff "
                "until it accepts them", type(exc).__name__, exc,
                extra={"event": "redis_refused_write"},
            )  # fmt: skip
            self._outage = True
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(2 * self._backoff_s, _BACKOFF_MAX_S)
        self._keep_all(running)

    def _keep_all(self, running: Batch | None) -> None:
        if self._sent is not None:
            self._keep(self._sent[0])
            self._sent = None
        if running is not None and running.finished(0) and not running.written:
            self._keep(running)

    def reachable(self) -> None:
        self._retry_at, self._backoff_s = 0.0, _BACKOFF_MIN_S
        if self._outage:
            log.info("Redis reachable again", extra={"event": "redis_reachable"})
            self._outage = False

    def last(self, running: Batch | None) -> None:
        """On the way out: write what ran (waiting for the running batch to end)."""
        try:
            self.settle()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.lost(exc, None)
        except redis.ResponseError:
            log.exception(
                "Redis refused a command; the batch stays pending",
                extra={"event": "redis_refused_command"},
            )
        for batch in [*self.unwritten, *([running] if running is not None else [])]:
            try:
                self.record(batch, wait=True)
            except redis.RedisError as exc:
                log.warning(
                    "could not write a batch of %d (%s); its entries stay pending for the "
                    "scheduler", len(batch.entries), exc,
                    extra={"event": "batch_unwritten", "queue": batch.queue},
                )  # fmt: skip
        self.unwritten = []
        self._writer.close()

    def _keep(self, batch: Batch) -> None:
        if batch not in self.unwritten:
            self.unwritten.append(batch)
