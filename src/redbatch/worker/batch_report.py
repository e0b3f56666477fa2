"""What one finished batch tells the logs and the traces.

One ``batch_failed`` WARNING line for a batch in which items failed, retried or died; one
``batch_done`` DEBUG line per batch (built only when DEBUG is on); one ``redbatch.batch``
span per batch when tracing is on. Each line carries the batch's fields: ``queue``,
``batch`` (``id``: this worker's count of batches, with ``worker`` it names the batch;
``size``), the request ids (bounded) and the batch span's ``trace_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redbatch.logconfig import request_ids
from redbatch.protocol.fields import DEAD, ERROR, TRACEPARENT, TRACESTATE
from redbatch.tracing import BatchTrace, BatchTracer
from redbatch.worker.executor import Ran
from redbatch.worker.reader import RawEntry

# The failed-batch line keeps its old logger name: operators filter on it.
log = logging.getLogger("redbatch.worker.telemetry")

# Outcome label of items re-queued with backoff (telemetry.RETRY).
RETRY = "retry"
# Handler errors already logged where they are found (executor.py logs a broken handler
# contract): the batch line would only say it again.
_LOGGED_ELSEWHERE = "HandlerContractError:"
_MAX_ERROR_CHARS = 300  # of the first error quoted in the failed-batch line
_B_TRACEPARENT, _B_TRACESTATE = TRACEPARENT.encode(), TRACESTATE.encode()


class BatchReport:
    def __init__(self, worker: str = "", tracer: BatchTracer | None = None) -> None:
        self._worker = worker
        self._tracer = tracer
        self.batches = 0  # this worker's batch ids: 1, 2, ...

    def done(
        self,
        queue: str,
        ran: Sequence[Ran],
        outcomes: Sequence[str],
        *,
        waits_ms: Sequence[float],
        service_s: float,
        entries: Sequence[RawEntry] = (),
    ) -> None:
        """Log and trace one batch whose results are on their way to Redis."""
        if not ran:
            return  # only malformed entries: dead-lettered without a run, nothing to say
        self.batches += 1
        failed = [(r, o) for r, o in zip(ran, outcomes, strict=True) if o in (ERROR, RETRY, DEAD)]
        trace_id = None
        if self._tracer is not None:
            trace_id = self._tracer.record(
                self._trace(queue, ran, outcomes, waits_ms, service_s, entries, failed)
            )
        debug = log.isEnabledFor(logging.DEBUG)
        if not (failed or debug):
            return
        fields: dict[str, Any] = {"queue": queue, "batch": {"id": self.batches, "size": len(ran)}}
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if debug:
            log.debug(
                "queue %s: batch %d of %d items ran in %.1f ms",
                queue, self.batches, len(ran), service_s * 1000,
                extra={
                    "event": "batch_done", **fields, "outcomes": _tally(outcomes),
                    "handler_ms": round(service_s * 1000, 3),
                    **request_ids([r.request.id for r in ran]),
                },
            )  # fmt: skip
        if failed:
            _log_failures(queue, len(ran), failed, fields)

    def _trace(
        self,
        queue: str,
        ran: Sequence[Ran],
        outcomes: Sequence[str],
        waits_ms: Sequence[float],
        service_s: float,
        entries: Sequence[RawEntry],
        failed: Sequence[tuple[Ran, str]],
    ) -> BatchTrace:
        contexts = []
        by_entry = {(r.request.priority, r.request.entry_id): r.request.id for r in ran}
        for entry in entries:
            parent = entry.fields.get(_B_TRACEPARENT)
            request_id = by_entry.get((entry.priority, entry.entry_id))
            if parent is not None and request_id is not None:
                contexts.append((request_id, parent, entry.fields.get(_B_TRACESTATE)))
        return BatchTrace(
            queue=queue, worker=self._worker, batch_id=self.batches, size=len(ran),
            start_ms=ran[0].start, end_ms=ran[0].end, handler_s=service_s, waits_ms=waits_ms,
            outcomes=_tally(outcomes), contexts=contexts,
            failures=[(r.request.id, r.outcome.error) for r, _ in failed],
        )  # fmt: skip


def _tally(outcomes: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in outcomes:
        counts[status] = counts.get(status, 0) + 1
    return counts


def _log_failures(
    queue: str, size: int, failed: Sequence[tuple[Ran, str]], fields: dict[str, Any]
) -> None:
    """One line for a batch in which items failed, retried or died."""
    first = failed[0][0].outcome.error[:_MAX_ERROR_CHARS]
    if first.startswith(_LOGGED_ELSEWHERE):
        return
    tally = {o: sum(1 for _, x in failed if x == o) for o in (ERROR, RETRY, DEAD)}
    log.warning(
        "queue %s: %d of %d items in a batch failed (%s): %s",
        queue, len(failed), size, ", ".join(f"{n} {o}" for o, n in tally.items() if n), first,
        extra={
            "event": "batch_failed", **fields, "outcomes": tally, "error": first,
            **request_ids([r.request.id for r, _ in failed]),
        },
    )  # fmt: skip
