"""The handler thread: one thread of its own runs every handler call and warm-up (always the
same one, as CUDA contexts like), so the worker's loop does Redis work meanwhile.

It owns what a batch needs while it runs: the event loop of async handlers, the sender of a
streaming handler's steps, and the watch that tells a handler with ``requests`` about cancels
that arrive mid-batch. The loop hands it a started batch (``launch``) and later waits on the
batch's future; ``close`` lets the running batch end on its own (or never, if it hangs: the
watchdog then ends the process).

A batch can also be *relayed*: given while another runs, it is started by this thread
itself the moment the running one ends, its started mark sent from here first. Then no
other thread has to wake between two batches (the loop's thread noticing the end, then this
one the launch): for a handler of 5 ms a batch those two wake-ups were the last 5 % of the
cycle. The loop reads the mark's answer later, as for any mark sent without waiting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis

from redbatch.protocol.keys import KeySpace, logical_name
from redbatch.transport.connection import Client
from redbatch.worker.batch import Batch
from redbatch.worker.calling import HandlerLoop
from redbatch.worker.cancel_watch import CancelWatch
from redbatch.worker.chunk_sender import ChunkSender
from redbatch.worker.executor import Executor, Ran
from redbatch.worker.heartbeat import Progress
from redbatch.worker.late_cancels import LateCancels, cancel_late
from redbatch.worker.loader import warm_up_all

log = logging.getLogger(__name__)

# How long a launch waits for the handler thread to pick its batch up (it normally takes
# microseconds; the bound only matters if the thread is still busy).
_HANDOFF_WAIT_S = 0.005


@dataclass(eq=False, slots=True)
class Relay:
    """A batch for the handler thread to start itself when the running one ends."""

    executor: Executor
    batch: Batch
    cancelled: frozenset[str]  # its requests cancelled already (the early check)
    late: LateCancels  # those its mark's check finds, settled by the loop
    # Sends its started mark (no retry: the loop has its own way); returns the answer's
    # reader, or None where a mark cannot be sent without waiting.
    send: Callable[[], Callable[[], frozenset[str]] | None]
    # The answer's reader, once the mark is sent and the batch started (None: it was not).
    answer: Callable[[], frozenset[str]] | None = None


class HandlerThread:
    """Runs batches on the handler thread, telling ``progress`` (the watchdog's view) when
    one starts and ends."""

    def __init__(
        self,
        client: Client,
        keyspace: KeySpace,
        progress: Progress,
        *,
        result_ttl_s: int,
        stopping: threading.Event,
    ) -> None:
        self._progress = progress
        self._stopping = stopping  # set: a relayed batch is not started
        self._relay: Relay | None = None
        self._relay_lock = threading.Lock()
        # The event loop of async handlers: made and run by the handler thread only.
        self.loop = HandlerLoop()
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redbatch-handler")
        self._chunks = ChunkSender(client, keyspace, result_ttl_s=result_ttl_s)
        self._cancel_watch = CancelWatch(self._chunks.check_cancelled)

    def warm_up(self, executors: Iterable[Executor]) -> None:
        warm_up_all(executors, self._compute, self.loop)

    def launch(
        self,
        executor: Executor,
        batch: Batch,
        cancelled: frozenset[str],
        late: LateCancels | None = None,
    ) -> None:
        """Run ``batch`` (marked started; ``cancelled``: its requests cancelled already;
        ``late``: those its started mark's check finds, still on their way)."""
        batch.future = self._compute.submit(self._execute, executor, batch, cancelled, late)
        # Let the handler thread take the GIL now: otherwise it waits until the loop's
        # thread, busy building the previous batch's writes, next blocks on I/O.
        batch.running.wait(_HANDOFF_WAIT_S)

    def relay(self, relay: Relay) -> None:
        """Have ``relay.batch`` started on this thread when the running batch ends."""
        with self._relay_lock:
            self._relay = relay

    def take_back(self) -> None:
        """Once the running batch ended: a relay this thread did not start is the loop's."""
        with self._relay_lock:
            self._relay = None

    def close(self) -> None:
        # The loop is closed on its own thread, after the running batch (never, if that one
        # hangs).
        self._compute.submit(self.loop.close)
        self._compute.shutdown(wait=False)
        self._chunks.close()
        self._cancel_watch.close()

    def _execute(
        self,
        executor: Executor,
        batch: Batch,
        cancelled: frozenset[str],
        late: LateCancels | None,
    ) -> list[Ran]:
        self._progress.batch_queue = logical_name(batch.queue)
        self._progress.batch_items = len(batch.prepared.requests)
        began = self._progress.batch_started = time.monotonic()
        batch.running.set()
        publish = self._chunks.publisher(batch.queue)
        # RequestInfo.cancelled() reads this set: the watch adds cancels that come meanwhile.
        seen: set[str] | frozenset[str] = cancelled
        watching = executor.wants_requests
        if watching:
            seen = set(cancelled)
            if late is not None:
                late.watch(seen)
            ids = [r.id for r in batch.prepared.requests]
            self._cancel_watch.watch(self._chunks.keys(batch.queue), ids, seen)
        try:
            ran = executor.execute(batch.prepared, seen, publish)
            if late is not None:
                cancel_late(ran, late.wait())
        finally:
            if watching:
                self._cancel_watch.done()
            publish.flush()  # every chunk written before the batch's final replies
            self._progress.batch_started = None
            batch.service_s = time.monotonic() - began
        self._pass_on()  # before this batch's future is done: the loop then sees which
        return ran

    def _pass_on(self) -> None:
        """Start the relayed batch, if any: its mark sent, then queued to this very thread,
        which takes it up as soon as the batch that just ended returns."""
        with self._relay_lock:
            relay, self._relay = self._relay, None
        if relay is None or self._stopping.is_set():
            return  # a stop came: the loop hands the batch back unstarted
        try:
            answer = relay.send()
        except redis.RedisError as exc:
            # Not started: the loop marks and launches it the usual way, with its retries.
            log.debug("relayed mark not sent (%s)", exc, extra={"event": "relay_not_sent"})
            return
        if answer is None:
            return
        try:
            relay.batch.future = self._compute.submit(
                self._execute, relay.executor, relay.batch, relay.cancelled, relay.late
            )
        except RuntimeError:  # shut down meanwhile: the worker is closing
            with contextlib.suppress(redis.RedisError):
                answer()  # the reply read, so its connection goes back to the pool
            return
        relay.answer = answer
