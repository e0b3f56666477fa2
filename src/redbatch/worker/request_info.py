"""What a handler may know about each request of its batch, besides the payload.

A handler that declares a parameter named ``requests`` gets one ``RequestInfo`` per payload,
in batch order. The objects are read-only views built from the entry the worker read; the
cancellation check asks the set of cancelled ids the worker keeps for the running batch.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

from redbatch.protocol.fields import Request
from redbatch.protocol.keys import logical_name


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One request of the batch: ``id``, ``queue``, ``attempt`` (1 on first delivery),
    ``cost``, ``priority`` (its lane), ``enqueued_ms`` (ms since epoch, 0 when the producer
    did not say), ``deadline_ms`` (ms since epoch, None when there is none)."""

    id: str
    queue: str
    attempt: int
    cost: int
    priority: str
    enqueued_ms: int
    deadline_ms: int | None
    # The worker's record of cancelled request ids for this batch; it may grow while the
    # handler runs, so cancelled() asks it each time instead of copying a flag.
    _cancelled: Set[str] = field(default=frozenset(), repr=False, compare=False)

    def cancelled(self) -> bool:
        """True once the request has been cancelled: its result will not be wanted."""
        return self.id in self._cancelled


def request_info(request: Request, cancelled: Set[str] = frozenset()) -> RequestInfo:
    return RequestInfo(
        id=request.id,
        queue=logical_name(request.queue),
        attempt=request.attempt,
        cost=request.cost,
        priority=request.priority,
        enqueued_ms=request.enq,
        deadline_ms=request.deadline or None,
        _cancelled=cancelled,
    )
