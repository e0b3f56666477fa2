"""A batch on its way through the worker, and how far one turn of the loop got."""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from redbatch.protocol.fields import ATTEMPT, Request, integer_field_or_default
from redbatch.worker.executor import Executor, Prepared, Ran
from redbatch.worker.marks import StartArgs
from redbatch.worker.reader import RawEntry
from redbatch.worker.writer import Malformed

log = logging.getLogger(__name__)


def attempt_of(entry: RawEntry) -> int:
    """The entry's attempt (a malformed entry's field read as best it can be)."""
    if entry.request is None:
        return integer_field_or_default(entry.fields, ATTEMPT)
    return entry.request.attempt


@dataclass
class Batch:
    """One batch on its way through the worker: parsed, decoded, then run."""

    queue: str
    entries: list[RawEntry]
    malformed: list[Malformed]
    prepared: Prepared
    # A redelivered suspect runs alone: nothing is read ahead while it runs.
    alone: bool = False
    future: Future[list[Ran]] | None = None
    service_s: float = 0.0  # the handler's time, set by the handler thread
    running: threading.Event = field(default_factory=threading.Event)
    written: bool = False  # its outcomes are recorded in Redis
    counted: bool = False  # in the worker's statistics (once, however often it is written)
    # The ids found cancelled by the early check (made while the batch before ran); None
    # when there was none: the started mark then waits for its own check (worker.starting).
    early: frozenset[str] | None = None
    start_args: StartArgs | None = None  # its started mark, built with the early check

    def finished(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the handler to finish this batch;
        True once it has."""
        future = self.future
        if future is None or future.done():
            return True
        if timeout == 0:
            return False
        # The future's own condition: ``concurrent.futures.wait`` would build a waiter (an
        # event and its locks) on every call, and the loop asks after every read-ahead.
        with contextlib.suppress(TimeoutError, CancelledError):
            future.exception(timeout)
        return future.done()


@dataclass
class Turn:
    """How far one turn of the loop got: a batch decoded but not started, one started."""

    following: Batch | None = None
    launched: Batch | None = None


def prepare(entries: list[RawEntry], executor: Executor, *, alone: bool) -> Batch:
    """Decode ``entries`` (all of one queue, at least one; parsed when read): what did not
    parse is kept aside as malformed, to be dead-lettered with the batch's results."""
    queue = entries[0].queue
    requests: list[Request] = [e.request for e in entries if e.request is not None]
    malformed: list[Malformed] = []
    if len(requests) < len(entries):
        malformed = [Malformed(e, e.malformed) for e in entries if e.request is None]
    for bad in malformed:
        log.warning(
            "dead-lettering malformed entry %s on %s: %s",
            bad.entry.entry_id,
            queue,
            bad.reason,
            extra={"event": "entry_malformed", "queue": queue, "entry": bad.entry.entry_id},
        )
    return Batch(queue, entries, malformed, executor.prepare(requests), alone=alone)
