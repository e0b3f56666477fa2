"""What the synchronous producer does for a caller whose deadline passes: its admission
runs on a daemon thread the caller waits on for the time it has left (connecting and
redis-py's retries included), and the cancels it implies go from a background thread. The
caller's ResultTimeout is raised at its deadline, whatever Redis or the network does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import redis

from redbatch.connection import MAX_CONNECTIONS, redis_failure
from redbatch.errors import ResultTimeout
from redbatch.producer._core import Outage, ProducerCore, Submission, by_queue
from redbatch.producer.admission import Deadline
from redbatch.producer.background import BackgroundCancels, DaemonPool
from redbatch.producer.handle import CancelFn, Handle
from redbatch.producer.routing import Routes
from redbatch.protocol.scripts import Scripts

log = logging.getLogger(__name__)


class Overdue:
    """The threads and steps of timed-out waits for one producer."""

    def __init__(
        self,
        core: ProducerCore,
        scripts: Scripts,
        routes: Routes,
        cancel_ids: CancelFn,
        unregister: Callable[[list[Handle]], None],
        outage: Outage,
    ) -> None:
        self._core = core
        self._scripts = scripts
        self._routes = routes
        self._cancel_ids = cancel_ids
        self._unregister = unregister
        self._outage = outage
        tag = core.producer_id[:9]
        self._background = BackgroundCancels(f"redbatch-cancels-{tag}")
        self._io = DaemonPool(f"redbatch-admit-{tag}", MAX_CONNECTIONS)

    def stop(self) -> None:
        self._background.stop()
        self._io.stop()

    def within(
        self,
        deadline: Deadline,
        admit: Callable[[], list[Handle]],
        queue: str,
        subs: list[Submission],
        once: bool = False,
    ) -> list[Handle]:
        """Run ``admit`` (route, register, admit ``subs``) by the caller's ``deadline``: on a
        thread of ``_io`` whose future the caller waits on, so connecting and retrying count
        too. At the deadline: ResultTimeout now, and once ``admit`` ends its handles are
        dropped and, with ``cancel_on_timeout``, ``subs`` cancelled (they may have been
        added)."""
        if deadline.at is None:
            return admit()
        future = self._io.submit(admit)
        try:
            return future.result(deadline.remaining())
        except (FutureTimeout, ResultTimeout):
            future.add_done_callback(lambda done: self._abandon(done, queue, subs, once))
            raise ResultTimeout(subs[0].request_id, deadline.timeout or 0.0) from None

    def _abandon(
        self, done: Future[list[Handle]], queue: str, subs: list[Submission], once: bool
    ) -> None:
        if done.exception() is None:
            self._unregister(done.result())
        if not self._core.cancel_on_timeout:
            return
        ids = [s.request_id for s in subs]
        if once:
            self._background.submit(lambda: self._leave(queue, ids[0]))
            return

        def cancel() -> None:
            for name in self._routes.served(queue):  # it may be in any shard
                self._cancel_ids(name, ids)

        self._background.submit(cancel)

    def timed_out(self, handles: list[Handle]) -> None:
        """cancel_on_timeout: the cancels go from a background thread, so the caller's
        ResultTimeout is raised at its timeout whatever Redis does."""
        if self._core.cancel_on_timeout:
            self._background.submit(lambda: self._cancel_timed_out(handles))

    def _cancel_timed_out(self, handles: list[Handle]) -> None:
        """Best effort, skipped while the listener knows Redis is down. A request submitted
        with its own id is cancelled only if no other producer waits for it (leave.lua)."""
        if self._outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(handles))
            return
        for queue, ids in by_queue([h for h in handles if not h.once]).items():  # per shard
            self._cancel_ids(queue, ids)
        for handle in handles:
            if handle.once:
                self._leave(handle.queue, handle.id)

    def _leave(self, queue: str, request_id: str) -> None:
        keys, args = self._core.leave_call(queue, request_id)
        try:
            self._scripts.leave(keys=keys, args=args)
        except redis.RedisError as exc:
            raise redis_failure(f"cannot cancel request {request_id}", exc) from None
