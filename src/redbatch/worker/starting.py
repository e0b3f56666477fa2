"""Starting a batch: its started mark and cancel check, then the handler.

Three ways (docs/wire-contract.md, "Cancellation"):

- **Relayed.** Batch N+1, decoded while N still runs, has its cancel keys read then (the
  early check) and is handed to the handler thread (``follow``), which starts it itself the
  moment N ends: it sends N+1's mark, with a second cancel check, and runs N+1 without
  waiting for the reply, which the loop reads after (``relayed``). So neither the mark's
  round trip nor a wake-up of another thread is on the path from one batch to the next: for
  a handler of 5 ms a batch those were a tenth of the cycle. The mark is in the socket before
  the handler starts, so a crash from then on still counts the attempt. A request cancelled
  between the two checks has been given to the handler, but it still ends ``cancelled``: the
  handler thread waits for the second check (``LateCancels``) before the batch's outcomes are
  final.
- **Checked early, launched by the loop.** As above, when the handler thread could not
  start it (N+1 was ready only after N ended, or its mark could not be sent from there): the
  loop sends the mark and launches N+1 without waiting for the reply.
- **Otherwise** (a batch decoded after the one before ended, the first batch, a cluster): the
  mark and the check in one round trip, then the handler; cancelled requests never reach it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import redis

from redbatch.protocol.keys import logical_name
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Executor
from redbatch.worker.handler_thread import HandlerThread, Relay
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
        self._relay: Relay | None = None  # the batch handed to the handler thread to follow

    def follow(self, batch: Batch | None) -> None:
        """While the batch before ``batch`` runs: check ``batch``'s cancel keys now and hand
        it to the handler thread, to start when the running batch ends."""
        if batch is None or not batch.prepared.requests or not self._marks.starts_unconfirmed:
            return
        requests = batch.prepared.requests
        batch.early = early = self._marks.cancelled_now(batch.queue, requests)
        batch.start_args = ahead = self._marks.start_args(batch.queue, requests)
        executor = self._executors[logical_name(batch.queue)]
        send = lambda: self._marks.start_unconfirmed(ahead, retry=False)  # noqa: E731
        self._relay = Relay(executor, batch, early, LateCancels(), send)
        self._handler.relay(self._relay)

    def relayed(self, batch: Batch | None) -> bool:
        """Once the running batch ended: whether the handler thread started ``batch``
        (then its mark's answer is read here); if not, the loop launches it."""
        self._handler.take_back()
        relay, self._relay = self._relay, None
        if relay is None or relay.batch is not batch or relay.answer is None:
            return False
        _confirm(batch, relay.answer, relay.late)
        return True

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
        _confirm(batch, confirm, late)
        return batch


def _confirm(batch: Batch, answer: Callable[[], frozenset[str]], late: LateCancels) -> None:
    """Read the answer of a batch's mark sent without waiting, for the handler thread."""
    found: frozenset[str] = frozenset()
    try:
        found = answer()
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
