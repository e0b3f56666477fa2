"""Starting a batch: its started mark and cancel check, then the handler.

Two ways (docs/wire-contract.md, "Cancellation"):

- **Checked early.** Batch N+1, decoded while N still runs, has its cancel keys read then
  (``check_early``). When N ends, N+1's mark is sent with a second cancel check and N+1 goes
  to the handler at once; the reply is read after. So the mark's round trip is not on the
  path from one batch to the next: for a handler of 5 ms a batch it was a tenth of the cycle.
  The mark is in the socket before the handler starts, so a crash from then on still counts
  the attempt. A request cancelled between the two checks has been given to the handler,
  but it still ends ``cancelled``: the handler thread waits for the second check
  (``LateCancels``) before the batch's outcomes are final.
- **Otherwise** (a batch decoded after the one before ended, the first batch, a cluster): the
  mark and the check in one round trip, then the handler; cancelled requests never reach it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

from redbatch.protocol.keys import logical_name
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Executor
from redbatch.worker.handler_thread import HandlerThread
from redbatch.worker.late_cancels import LateCancels
from redbatch.worker.marks import Marks

log = logging.getLogger(__name__)


class Starter:
    def __init__(
        self, marks: Marks, handler: HandlerThread, executors: Mapping[str, Executor]
    ) -> None:
        self._marks = marks
        self._handler = handler
        self._executors = executors

    def check_early(self, batch: Batch | None) -> None:
        """Read ``batch``'s cancel keys now, while the batch before it runs."""
        if batch is not None and batch.prepared.requests and self._marks.starts_unconfirmed:
            requests = batch.prepared.requests
            batch.early = self._marks.cancelled_now(batch.queue, requests)
            batch.start_args = self._marks.start_args(batch.queue, requests)

    def launch(self, batch: Batch | None) -> Batch | None:
        """Mark the batch started and hand it to the handler thread."""
        if batch is None or not batch.prepared.requests:
            return batch
        requests = batch.prepared.requests
        executor = self._executors[logical_name(batch.queue)]
        early, ahead = batch.early, batch.start_args
        confirm = None if ahead is None else self._marks.start_unconfirmed(ahead)
        if early is None or confirm is None:
            self._handler.launch(executor, batch, self._marks.start(batch.queue, requests))
            return batch
        late = LateCancels()
        self._handler.launch(executor, batch, early, late)
        found: frozenset[str] = frozenset()
        try:
            found = confirm()
        except redis.RedisError as exc:
            # The batch runs (its mark was sent); its results are written as any batch's,
            # and a lost connection is noticed by the next command.
            log.warning(
                "no answer to a started mark's cancel check (%s); the batch runs unchecked",
                exc,
                extra={"event": "start_check_lost", "queue": batch.queue},
            )
        finally:
            late.settle(found)
        return batch
