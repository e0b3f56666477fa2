"""The adaptive window (``--target-latency-ms``), told how each finished batch went."""

from __future__ import annotations

import logging

from redbatch.batching.adaptive import AdaptiveWindow
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Ran
from redbatch.worker.reader import Reader

log = logging.getLogger(__name__)


def tune(tuner: AdaptiveWindow, reader: Reader, batch: Batch, ran: list[Ran]) -> None:
    """Tell the tuner how ``batch`` went (``ran``: at least one); the reader takes the
    window and batch size it answers."""
    enqueued = [r.request.enq for r in ran if r.request.enq]
    wait_ms = ran[0].start - min(enqueued) if enqueued else 0
    tuner.observe(
        size=len(ran),
        queue_wait_s=max(0, wait_ms) / 1000,
        service_s=batch.service_s,
        now=ran[0].end / 1000,
    )
    before, reader.policy = reader.policy, tuner.policy
    if reader.policy != before:
        log.debug("%s", tuner.status_line(), extra={"event": "window_tuned"})
