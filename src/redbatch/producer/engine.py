"""The producer itself, with no I/O: what it waits for, where requests go, and every Redis
interaction as a flow of plans (``producer.plans``). ``Producer`` and ``AsyncProducer`` are
shells that run these flows on a thread or on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redbatch.errors import (
    MapQueueFull,
    NoWorker,
    ProducerClosed,
    QueueFull,
    RedbatchError,
    ResultTimeout,
)
from redbatch.producer import plans
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Admissions, Deadline
from redbatch.producer.entries import Submission
from redbatch.producer.handle import BaseHandle
from redbatch.producer.listener import Listening
from redbatch.producer.options import WORKERS_FRESH_S, ManyOptions, SubmitOptions
from redbatch.producer.plans import Flow
from redbatch.producer.requests import batches, by_queue, check_new_ids, on_shards, submissions
from redbatch.protocol.keys import DEFAULT_PRIORITY, check_queue_name
from redbatch.protocol.shards import ShardRouter, served_names

log = logging.getLogger(__name__)

H = TypeVar("H", bound=BaseHandle)


@dataclass(frozen=True, slots=True)
class Batch(Generic[H]):
    """Requests on their way in: ``flow`` admits them and returns their handles."""

    queue: str
    subs: list[Submission]
    once: bool
    flow: Flow[list[H]]


class Engine(Generic[H]):
    """One producer's state (requests waiting, shard routes, queues listened to) and its
    flows. ``new_handles`` makes the shell's handles for submissions."""

    def __init__(
        self,
        core: ProducerCore,
        listening: Listening,
        new_handles: Callable[[list[Submission], bool], list[H]],
    ) -> None:
        self.core = core
        self.listening = listening
        self.cond: threading.Condition = listening.cond
        self.pending: dict[str, H] = listening.pending
        self.closed = False
        self._new_handles = new_handles
        # The shell's listener listens to a queue: a reply key to wake, if any (set by the
        # shell once it has a listener, at its connection).
        self.listen: Callable[[str], str | None] = lambda queue: None
        self._admissions = Admissions(core.producer_id)
        self._router = ShardRouter()
        # logical queue -> (when looked, whether a live worker serves it)
        self._workers_seen: dict[str, tuple[float, bool]] = {}

    # -- submitting ----------------------------------------------------------------------

    def one(self, queue: str, payload: Any, options: SubmitOptions, deadline: Deadline) -> Batch[H]:
        request_id = options.get("id")
        sub = self.core.submission(
            queue,
            payload,
            request_id=request_id,
            timeout=deadline.timeout,
            cost=options.get("cost", 1),
            priority=options.get("priority", DEFAULT_PRIORITY),
            stream=options.get("stream", False),
        )
        once = request_id is not None
        flow = self.admit(queue, [sub], deadline, options.get("shard_key"), 1, once, False)
        return Batch(queue, [sub], once, self._checked(queue, options, flow))

    def many(
        self, queue: str, payloads: Any, options: ManyOptions, deadline: Deadline
    ) -> Batch[H] | None:
        """None when there is nothing to submit. Every payload is encoded first."""
        chunk = options.get("chunk", 500)
        priority = options.get("priority", DEFAULT_PRIORITY)
        cost, stream = options.get("cost", 1), options.get("stream", False)
        subs = submissions(self.core, queue, payloads, deadline.timeout, priority, cost, stream)
        batches(subs, chunk)  # checks chunk before anything is sent
        if not subs:
            return None
        flow = self.admit(queue, subs, deadline, None, chunk, False, True)
        return Batch(queue, subs, False, self._checked(queue, options, flow))

    def _checked(self, queue: str, options: Any, flow: Flow[list[H]]) -> Flow[list[H]]:
        required = options.get("require_worker")
        if required or (required is None and self.core.require_worker):
            yield from self.require_worker(queue)
        return (yield from flow)

    def admit(
        self,
        queue: str,
        subs: list[Submission],
        deadline: Deadline,
        shard_key: str | bytes | None,
        chunk: int,
        once: bool,
        many: bool,
    ) -> Flow[list[H]]:
        """Route, register and admit ``subs`` in admissions of ``chunk``; all of a chunk is
        added or none (QueueFull; ``many``: MapQueueFull naming the chunks admitted)."""
        began = time.monotonic()
        rounds = len(batches(subs, chunk))
        routed = on_shards(subs, (yield from self.route(queue, rounds, shard_key, deadline)), chunk)
        handles = self.register(routed, once)
        for start, part in batches(routed, chunk):
            try:
                yield from self._admit(part, deadline, once)
            except QueueFull as full:
                self.unregister(handles[start:])
                if self.core.metrics is not None:
                    self.core.metrics.queue_full()
                if not many:
                    raise
                raise MapQueueFull(full, handles[:start]) from None
            except BaseException:
                self.unregister(handles[start:])
                raise
        if self.core.metrics is not None:
            self.core.metrics.submitted(time.monotonic() - began)
        return handles

    def _admit(self, subs: list[Submission], deadline: Deadline, once: bool) -> Flow[None]:
        """One admission call. Re-sent after a lost reply at most until ``deadline`` (then
        ResultTimeout); Redis applies it once (its sequence number, or the id's guard)."""
        numbers = self._admissions.open()
        try:
            full = yield plans.admission(self.core, subs, once, numbers)
        except RedbatchError:
            if deadline.passed():
                raise ResultTimeout(subs[0].request_id, deadline.timeout or 0.0) from None
            raise
        finally:
            self._admissions.close(numbers)
        if full is not None:
            raise full

    def require_worker(self, queue: str) -> Flow[None]:
        """NoWorker unless a worker with a live heartbeat serves ``queue``. The answer is
        trusted for WORKERS_FRESH_S: no round trip per request."""
        seen = self._workers_seen.get(queue)
        if seen is None or time.monotonic() - seen[0] >= WORKERS_FRESH_S:
            live = yield from self._live_worker(queue)
            seen = self._workers_seen[queue] = (time.monotonic(), live)
        if not seen[1]:
            raise NoWorker(queue)

    def _live_worker(self, queue: str) -> Flow[bool]:
        """Group consumers with a heartbeat key; else (where a SCAN walks every key: not on
        a cluster, whose SCAN would not reach the queue's node) a SCAN for heartbeat keys."""
        keyspace = self.core.keyspace
        names = yield from self.served(queue)
        found = yield plans.consumers(keyspace, names)
        if found and (yield plans.heartbeats(keyspace, found)):
            return True
        for name in names if self.listening.topology.one_node else ():
            cursor, hit = yield plans.heartbeat_scan(keyspace, name, 0)
            while not hit and cursor:
                cursor, hit = yield plans.heartbeat_scan(keyspace, name, cursor)
            if hit:
                return True
        return False

    # -- routing -------------------------------------------------------------------------

    def route(
        self, queue: str, count: int, shard_key: str | bytes | None, deadline: Deadline | None
    ) -> Flow[list[str]]:
        """The physical queues (shards) of ``count`` admissions to ``queue``, each created
        and listened to at first use."""
        check_queue_name(queue)
        yield from self._refresh(queue, deadline)
        names = self._router.pick(queue, count, shard_key)
        for name in dict.fromkeys(names):
            if self.listening.knows(name):
                continue
            yield plans.ensure_queue(self.core.keyspace, self.core.keyspace.queue(name))
            wake = self.listen(name)
            if wake is not None:
                try:
                    yield plans.wake(wake)
                except RedbatchError as exc:
                    log.warning(
                        "could not wake the reply listener: %s",
                        exc,
                        extra={"event": "listener_wake_failed"},
                    )
        return names

    def served(self, queue: str) -> Flow[tuple[str, ...]]:
        """Every physical queue of ``queue`` (its shards, and its own keys)."""
        check_queue_name(queue)
        yield from self._refresh(queue)
        return served_names(queue, self._router.shards(queue))

    def _refresh(self, queue: str, deadline: Deadline | None = None) -> Flow[None]:
        """Re-read the shard count when stale, never past the caller's ``deadline``: once
        that has passed, the count known (or one shard) stands and the admission that
        follows raises the caller's ResultTimeout."""
        if not self._router.stale(queue):
            return
        try:
            shards = yield plans.shard_count(self.core.keyspace, queue)
        except RedbatchError:
            if deadline is not None and deadline.passed():
                return
            raise
        self._router.update(queue, shards)

    # -- results and cancels -------------------------------------------------------------

    def get_result(self, queue: str, request_id: str) -> Flow[Any]:
        names = yield from self.served(queue)
        return (yield plans.stored_result(self.core, queue, names, request_id))

    def cancel(self, queue: str, ids: list[str]) -> Flow[None]:
        """Cancel ``ids`` in every physical queue of ``queue`` (an id alone does not say
        which shard holds it)."""
        for name in (yield from self.served(queue)):
            yield plans.cancel(self.core, name, ids)

    def cancel_here(self, queue: str, ids: list[str]) -> Flow[None]:
        """Cancel ``ids`` of physical queue ``queue`` (a handle knows its shard)."""
        yield plans.cancel(self.core, queue, ids)

    def wants_cancel(self, cancelled: bool) -> bool:
        """Whether an ended wait cancels its requests: a cancelled task (``cancelled``) with
        ``cancel_on_cancel``, a timeout with ``cancel_on_timeout``."""
        if self.core.metrics is not None and not cancelled:
            self.core.metrics.timed_out()
        wanted = self.core.cancel_on_cancel if cancelled else self.core.cancel_on_timeout
        return wanted and not self.closed

    def gone(self, handles: Sequence[H]) -> Flow[None]:
        """Cancel the requests nobody waits for. Best effort, skipped while the listener
        knows Redis is down. A request submitted with its own id is cancelled only if no
        other producer waits for it (leave.lua)."""
        if self.listening.outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(handles))
            return
        for queue, ids in by_queue([h for h in handles if not h.once]).items():  # per shard
            yield plans.cancel(self.core, queue, ids)
        for handle in handles:
            if handle.once:
                yield plans.leave(self.core, handle.queue, handle.id)

    def abandon(self, batch: Batch[H]) -> Flow[None]:
        """Cancel a batch whose admission the caller gave up on (it may have been added, to
        any shard)."""
        ids = [s.request_id for s in batch.subs]
        if batch.once:
            yield plans.leave(self.core, batch.subs[0].queue, ids[0])
        else:
            yield from self.cancel(batch.queue, ids)

    # -- waiting list --------------------------------------------------------------------

    def register(self, subs: list[Submission], once: bool = False) -> list[H]:
        handles = self._new_handles(subs, once)
        if self.core.metrics is not None:
            self.core.metrics.started(handles)
        with self.cond:
            if self.closed:
                raise ProducerClosed("producer is closed")
            check_new_ids(self.pending, [h.id for h in handles])
            for handle in handles:
                self.pending[handle.id] = handle
        return handles

    def unregister(self, handles: Sequence[BaseHandle]) -> None:
        with self.cond:
            for handle in handles:
                if self.pending.get(handle.id) is handle:
                    del self.pending[handle.id]

    def forget(self, batch: Batch[H]) -> None:
        """Drop the handles of an abandoned batch's requests from the waiting list."""
        with self.cond:
            for sub in batch.subs:
                self.pending.pop(sub.request_id, None)

    def close(self) -> None:
        """Mark closed: every handle still waiting raises ProducerClosed."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            waiting = list(self.pending.values())
            self.pending.clear()  # the listener's dict too: it resolves nothing more
        for handle in waiting:
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
