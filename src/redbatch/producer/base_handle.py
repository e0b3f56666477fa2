"""What every handle on a submitted request shares (``BaseHandle``), whichever way its caller
waits, and what it tells the producer when nobody waits for it any more (``GoneFn``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from redbatch.errors import ConfigError, ResultTimeout, StreamRestarted
from redbatch.producer._core import ProducerCore
from redbatch.producer.chunk_feed import ChunkFeed, Restarted, check_resume
from redbatch.protocol.chunks import Chunk
from redbatch.protocol.fields import OK, Outcome


class GoneFn(Protocol):
    """Takes note that nobody waits for these handles any more: their local wait timed out,
    or (``cancelled``) the waiting task was cancelled. Returns at once: any cancel goes to
    Redis in the background."""

    def __call__(self, handles: list[Any], *, cancelled: bool) -> None: ...


class BaseHandle:
    """A submitted request: its id, the physical queue (shard) it went to, and how its
    outcome becomes a value."""

    __slots__ = (
        "_cancel", "_core", "_ct", "_feed", "_gone", "id", "once", "queue", "streaming",
        "submitted_at",
    )  # fmt: skip

    def __init__(
        self,
        core: ProducerCore,
        cancel: Callable[[str, list[str]], Any],
        queue: str,
        request_id: str,
        gone: GoneFn | None = None,
        once: bool = False,
        streaming: bool = False,
    ) -> None:
        """``cancel`` sets the cancel keys of (queue, ids); ``gone`` is told when the
        caller's wait ends without an outcome; ``once``: submitted with a caller-chosen id;
        ``streaming``: submitted with ``stream=True`` (its chunks come to this producer)."""
        self.id = request_id
        self.queue = queue
        self.once = once
        self.streaming = streaming
        self._core = core
        self._cancel = cancel
        self._gone = gone
        self._ct = core.content_type
        self.submitted_at = 0.0  # time.monotonic() at submit, stamped when metrics are on
        # The chunks of a streaming request, made on the first chunk or stream() call.
        self._feed: ChunkFeed | None = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "waiting"
        return f"<{type(self).__name__} {self.queue}/{self.id} {state}>"

    def done(self) -> bool:
        raise NotImplementedError

    def _resolve(self, outcome: Outcome) -> None:
        """Its outcome arrived (called once: the producer takes it off its waiting list)."""
        raise NotImplementedError

    def _fail(self, error: Exception) -> None:
        raise NotImplementedError

    def _left(self, cancelled: bool) -> None:
        if self._gone is not None and not self.done():
            self._gone([self], cancelled=cancelled)

    def _check_streaming(self, resume: str) -> None:
        """Before a ``stream()``: a request submitted without ``stream=True`` gets no chunks,
        so iterating it would end empty, silently: say so instead."""
        check_resume(resume)
        if not self.streaming:
            raise ConfigError(
                f"request {self.id} was submitted without stream=True, so its chunks are not "
                "sent: submit(..., stream=True) or producer.stream(queue, payload) to stream it"
            )

    def _chunk_value(self, item: Chunk | Restarted) -> Any:
        """A chunk's value; StreamRestarted for a restart to announce."""
        if isinstance(item, Restarted):
            raise StreamRestarted(self.id, item.attempt)
        return self._core.value(Outcome(self.id, OK, item.body), self._ct)

    def _timeout(self, wait: float | None, timeout: float | None) -> ResultTimeout:
        """The caller's ResultTimeout (its ``timeout`` in the message)."""
        return ResultTimeout(self.id, (wait if timeout is None else timeout) or 0.0)
