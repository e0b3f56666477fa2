"""Every error redbatch raises derives from RedbatchError, so callers can catch one type."""

from __future__ import annotations

from typing import Any


class RedbatchError(Exception):
    """Base of every redbatch error."""


class ConfigError(RedbatchError):
    """A configuration value is invalid; the message names the setting and what is allowed."""


class ConnectionFailed(RedbatchError):
    """Redis could not be reached or refused us (address, password, TLS)."""


class RedisRefused(RedbatchError):
    """Redis answered but refused the command for a transient reason of its own: out of
    memory (``OOM``), a read-only replica (``READONLY``), loading its data (``LOADING``), busy
    with a script (``BUSY``), a replica without its primary (``MASTERDOWN``), a cluster
    resharding or down (``TRYAGAIN``, ``CLUSTERDOWN``). Reconnecting does not help: back off
    and try again. ``reason`` is the server's error code, ``message`` its text."""

    def __init__(self, what: str, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{what}: Redis refused ({reason}): {message}")


class PayloadError(RedbatchError):
    """A payload cannot be encoded or decoded (type, size, nesting, content type)."""


class PayloadTooLarge(PayloadError):
    """An encoded payload is larger than the configured limit."""


class MalformedEntry(RedbatchError):
    """A stream entry breaks the wire contract; the message is the dead-letter reason."""


class RequestFailed(RedbatchError):
    """The handler raised for this request. ``remote_type`` and ``remote_message`` say what."""

    def __init__(self, request_id: str, error: str) -> None:
        self.request_id = request_id
        self.error = error
        remote_type, sep, remote_message = error.partition(": ")
        self.remote_type = remote_type if sep else "Error"
        self.remote_message = remote_message if sep else error
        super().__init__(f"request {request_id} failed: {error}")


class RequestExpired(RedbatchError):
    """The request's deadline passed before a worker ran it."""

    def __init__(self, request_id: str, detail: str = "deadline passed") -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id} expired: {detail}")


class RequestCancelled(RedbatchError):
    """The request was cancelled before it ran."""

    def __init__(self, request_id: str, detail: str = "cancelled") -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id} cancelled: {detail}")


class StreamRestarted(RedbatchError):
    """A streaming request's worker died mid-stream and the request runs again from its
    start (``attempt``): the chunks yielded so far belong to an attempt that will not end.
    Reset what was built from them; ``result()`` gives the new attempt's final value, and
    ``stream()`` called again yields the new attempt's chunks from the first."""

    def __init__(self, request_id: str, attempt: int) -> None:
        self.request_id = request_id
        self.attempt = attempt
        super().__init__(f"request {request_id} restarted mid-stream: attempt {attempt} runs")


class RequestDead(RedbatchError):
    """The request was dead-lettered (malformed, or out of attempts); see ``reason``."""

    def __init__(self, request_id: str, reason: str) -> None:
        self.request_id = request_id
        self.reason = reason
        super().__init__(f"request {request_id} dead-lettered: {reason}")


class ResultTimeout(RedbatchError, TimeoutError):
    """The local wait for a result ended; the request may still finish later."""

    def __init__(self, request_id: str, timeout: float) -> None:
        self.request_id = request_id
        super().__init__(f"no result for request {request_id} within {timeout:g} s")


class ProducerClosed(RedbatchError):
    """The producer was closed while this request was still waiting for its result."""


class WrongEventLoop(RedbatchError, RuntimeError):
    """An AsyncProducer was used from an event loop other than the one it first ran on: its
    connections and futures belong to that loop. Make one AsyncProducer per event loop."""


class NoWorker(RedbatchError):
    """Raised at submit with ``require_worker=True`` when no worker with a live heartbeat
    serves the queue (a typo in the queue name, or no worker deployed): nothing was added."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(
            f"no live worker serves queue {queue!r} (require_worker): check the queue name "
            f"and that a worker runs for it"
        )


class DuplicateRequestId(RedbatchError):
    """This producer is already waiting for a request with the same id."""


class ResultNotFound(RedbatchError, KeyError):
    """No result is stored for this id: not finished yet, unknown, or past its TTL."""

    def __init__(self, queue: str, request_id: str) -> None:
        self.queue = queue
        self.request_id = request_id
        super().__init__(
            f"no result for request {request_id} on queue {queue} "
            "(not finished yet, unknown, or expired after its TTL)"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class QueueFull(RedbatchError):
    """The queue's lane of this call's ``priority`` holds ``max_queue_len`` requests already
    (each priority lane is bounded by itself); nothing of this call was added."""

    def __init__(
        self, queue: str, length: int, max_queue_len: int, priority: str = "normal"
    ) -> None:
        self.queue = queue
        self.length = length
        self.max_queue_len = max_queue_len
        self.priority = priority
        super().__init__(f"queue {queue} is full ({self._held()}); nothing was added")

    def _held(self) -> str:
        lane = "" if self.priority == "normal" else f" of priority {self.priority}"
        return f"{self.length} of {self.max_queue_len} requests{lane}"


class MapQueueFull(QueueFull):
    """``map`` met a full queue part way: the chunks sent before are in the queue and run.

    ``admitted`` holds their handles: the first ``len(admitted)`` payloads of the call, in
    input order (their results arrive on these handles, or by id with ``get_result``). The
    other requests of the call were not added. ``admitted`` is empty when the first chunk
    was refused, and then nothing of the call was added.
    """

    def __init__(self, full: QueueFull, admitted: list[Any]) -> None:
        super().__init__(full.queue, full.length, full.max_queue_len, full.priority)
        self.admitted = admitted
        if admitted:
            self.args = (
                f"queue {full.queue} is full ({self._held()}); "
                f"the first {len(admitted)} requests of this map call were added before and "
                "still run (see .admitted), the rest were not added",
            )


class Retry(Exception):
    """Raise from a handler to run this batch's items again later (with backoff) instead of
    failing them. ``delay`` (s) is the first wait; later attempts double it. Past the worker's
    ``max_attempts`` the item ends ``dead``."""

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        self.delay = delay
        super().__init__(reason)
