"""A batch on its way through the worker, and how far one turn of the loop got."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field

from redbatch.protocol.fields import ATTEMPT, integer_field_or_default
from redbatch.worker.executor import Prepared, Ran
from redbatch.worker.reader import RawEntry
from redbatch.worker.writer import Malformed


def attempt_of(entry: RawEntry) -> int:
    return integer_field_or_default(entry.fields, ATTEMPT)


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

    def finished(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the handler to finish this batch;
        True once it has."""
        if self.future is None:
            return True
        return bool(wait_for([self.future], timeout=timeout).done)


@dataclass
class Turn:
    """How far one turn of the loop got: a batch decoded but not started, one started."""

    following: Batch | None = None
    launched: Batch | None = None
