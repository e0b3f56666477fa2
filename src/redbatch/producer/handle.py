"""The synchronous producer's handle on one submitted request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from redbatch.errors import ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore
from redbatch.producer.chunk_feed import RAISE, ChunkFeed, Ended, Restarted, check_resume
from redbatch.protocol.chunks import Chunk
from redbatch.protocol.fields import Outcome

# Sets the cancel keys of (queue, request ids); raises ConnectionFailed.
CancelFn = Callable[[str, list[str]], None]
# Takes note that the local waits of these handles timed out (returns at once: the cancel
# goes to Redis in the background).
TimedOutFn = Callable[[list["Handle"]], None]


class Latch:
    """Wakes whoever waits on a group of handles: one per ``map`` call (shared by all of its
    handles), one per ``submit``. One lock per group, not an Event per request: building a
    Condition per request was a fifth of a producer's CPU in ``map``."""

    __slots__ = ("_cond", "_pending", "_watchers")

    def __init__(self, count: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending = count
        self._watchers = 0  # threads waiting on one handle: woken at every count-down

    def count_down(self) -> None:
        with self._cond:
            self._pending -= 1
            if self._pending <= 0 or self._watchers:
                self._cond.notify_all()

    def wait_all(self, timeout: float | None) -> bool:
        """True once every handle of the group has its outcome, False after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending <= 0, timeout)

    @property
    def cond(self) -> threading.Condition:
        """The group's lock: a handle's chunks are guarded by it too."""
        return self._cond

    def wait_change(self, timeout: float | None) -> None:
        """With ``cond`` held: wait until a handle of the group ends or gets chunks."""
        self._watchers += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._watchers -= 1

    def wait_one(self, done: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            self._watchers += 1
            try:
                return self._cond.wait_for(done, timeout)
            finally:
                self._watchers -= 1


class Handle:
    """A submitted request; ``result()`` waits for its outcome."""

    __slots__ = (
        "_cancel", "_core", "_ct", "_error", "_feed", "_latch", "_outcome", "_timed_out", "id",
        "once", "queue",
    )  # fmt: skip

    def __init__(
        self,
        core: ProducerCore,
        cancel: CancelFn,
        queue: str,
        request_id: str,
        ct: str,
        timed_out: TimedOutFn | None = None,
        latch: Latch | None = None,
        once: bool = False,
    ) -> None:
        """``timed_out`` is told of a local timeout (with ``cancel_on_timeout``; none: the
        request is left alone); ``latch`` is shared with the other handles of one ``map``
        call (a new one when not given); ``once``: submitted with a caller-chosen id."""
        self.id = request_id
        self.queue = queue
        self.once = once
        self._core = core
        self._cancel = cancel
        self._timed_out = timed_out
        self._ct = ct
        self._latch = latch if latch is not None else Latch(1)
        self._outcome: Outcome | None = None
        self._error: Exception | None = None
        # The chunks of a streaming request, made on the first chunk or stream() call.
        self._feed: ChunkFeed | None = None

    def __repr__(self) -> str:
        return f"<Handle {self.queue}/{self.id} {'done' if self.done() else 'waiting'}>"

    def done(self) -> bool:
        return self._outcome is not None or self._error is not None

    def result(self, timeout: float | None = None) -> Any:
        """The handler's result; raises RequestFailed, RequestExpired, RequestDead,
        RequestCancelled, ProducerClosed, or ResultTimeout when ``timeout`` seconds pass
        at ``timeout`` whatever Redis does (with the producer's ``cancel_on_timeout``, the
        request is then cancelled in the background)."""
        return self._result(timeout, timeout)

    def _result(self, wait: float | None, timeout: float | None) -> Any:
        """``result`` waiting ``wait`` seconds, of a caller's ``timeout`` (for its message)."""
        if not self.done() and not self._latch.wait_one(self.done, wait):
            if self._core.cancel_on_timeout and self._timed_out is not None:
                self._timed_out([self])
            raise ResultTimeout(self.id, timeout or 0.0)
        return self._value()

    def cancel(self) -> bool:
        """Cancel the request (see ``Producer.cancel``). False, and nothing sent, when its
        outcome has already arrived; raises ConnectionFailed if Redis cannot be reached."""
        if self.done():
            return False
        with self._latch.cond:
            if self._feed is not None:
                self._feed.cancelled = True  # no more chunks, only the outcome
        self._cancel(self.queue, [self.id])
        return True

    @property
    def position(self) -> tuple[int, int]:
        """(attempt, seq) of the last chunk ``stream()`` yielded; (0, -1) before the first:
        what ``Producer.stream_from`` resumes after."""
        with self._latch.cond:
            return self._feed.seen if self._feed is not None else (0, -1)

    def stream(self, timeout: float | None = None, *, resume: str = RAISE) -> Iterator[Any]:
        """Yield the request's chunks in order, each once, then end (an error outcome raises
        as ``result()`` would). Submit with ``stream=True`` (or use ``Producer.stream``).

        A worker killed mid-stream re-runs the request: by default the iterator raises
        StreamRestarted (``.attempt``), after which ``result()`` gives the new attempt's
        value and a new ``stream()`` yields its chunks from the first; ``resume="restart"``
        goes on with the new attempt's chunks instead. ``timeout`` bounds the whole stream
        (ResultTimeout; with ``cancel_on_timeout`` the request is then cancelled)."""
        check_resume(resume)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = self._next_chunk(resume, deadline, timeout)
            if item is None:
                self._value()  # raises unless ok
                return
            if isinstance(item, Ended):
                return  # Final ended it: the result comes with the rest of its batch
            if isinstance(item, Restarted):
                raise StreamRestarted(self.id, item.attempt)
            yield self._core.value(Outcome(self.id, "ok", item.body), self._ct)

    def _next_chunk(
        self, resume: str, deadline: float | None, timeout: float | None
    ) -> Chunk | Restarted | Ended | None:
        """The next chunk or restart; None once the outcome is in and no chunk is left."""
        cond = self._latch.cond
        with cond:
            if self._feed is None:
                self._feed = ChunkFeed()
            while True:
                item = self._feed.take(resume)
                if item is not None or self.done():
                    return item
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                self._latch.wait_change(wait)
        if self._core.cancel_on_timeout and self._timed_out is not None:
            self._timed_out([self])
        raise ResultTimeout(self.id, timeout or 0.0)

    def _chunks(self, chunks: list[Chunk]) -> None:
        """Chunks for this request arrived (the listener's thread)."""
        with self._latch.cond:
            if self._feed is None:
                self._feed = ChunkFeed()
            self._feed.offer(chunks)
            self._latch.cond.notify_all()

    def _value(self) -> Any:
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._core.value(self._outcome, self._ct)

    def _resolve(self, outcome: Outcome) -> None:
        """Called once (the producer takes the handle off its waiting list first)."""
        self._outcome = outcome
        self._latch.count_down()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._latch.count_down()
