"""Runs one batch through the user's handler. No Redis here: payloads in, outcomes out.

A handler exception must not fail innocent neighbours: the batch is bisected until the
failing items are alone, and only those end ``error``. A handler that returns the wrong
number of results breaks its contract; the whole batch fails with a message that says so.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from redbatch.clock import now_ms
from redbatch.errors import PayloadError, Retry
from redbatch.protocol import codec
from redbatch.protocol.fields import CANCELLED, DEAD, ERROR, EXPIRED, OK, Outcome, Request
from redbatch.worker.calling import Handler, HandlerCall, HandlerLoop
from redbatch.worker.request_info import RequestInfo, request_info
from redbatch.worker.streaming import CANCELLED_KIND, Publish, StreamRun, publish_nothing

log = logging.getLogger(__name__)

_OK, _ERROR, _RETRY = "ok", "error", "retry"
# The handler returned a generator (sync or async): a streaming handler, stepped by StreamRun.
_STREAM = "stream"


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class Ran:
    """One request's outcome and when its batch ran (ms since epoch)."""

    request: Request
    outcome: Outcome
    start: int
    end: int
    batch: int
    # Set when the handler asked for a retry (Retry, or a retryable exception type): the
    # item is re-queued through the delayed set; None means use the worker's base delay.
    retry: bool = False
    retry_delay_s: float | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch with its payloads decoded (by position); undecodable ones carry the reason."""

    requests: list[Request]
    payloads: dict[int, Any]
    undecodable: dict[int, str]


def error_text(exc: BaseException) -> str:
    """``Type: message`` as the wire contract stores errors; first line only, bounded."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message[:2000]}"


class Executor:
    def __init__(
        self,
        handler: Handler,
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        clock_ms: Callable[[], int] = now_ms,
        retry_on: tuple[type[BaseException], ...] = (),
        *,
        loop: HandlerLoop | None = None,
        encoder: codec.Encoder | None = None,
    ) -> None:
        self.handler = handler
        # Async handlers of every executor of a worker share its one loop.
        self._call = HandlerCall(handler, loop or HandlerLoop())
        self._encoder = encoder
        self._limits = limits
        self._clock_ms = clock_ms
        self._retry_on: tuple[type[BaseException], ...] = (Retry, *retry_on)

    def prepare(self, requests: list[Request]) -> Prepared:
        """Decode a batch's payloads (no handler yet): the worker does this for batch N+1
        while the handler runs batch N."""
        payloads: dict[int, Any] = {}
        undecodable: dict[int, str] = {}
        for i, request in enumerate(requests):
            try:
                payloads[i] = codec.decode(request.payload, request.ct, self._limits)
            except PayloadError as exc:
                undecodable[i] = error_text(exc)
        return Prepared(requests, payloads, undecodable)

    def run(
        self,
        requests: list[Request],
        cancelled: Set[str] = frozenset(),
        publish: Publish = publish_nothing,
    ) -> list[Ran]:
        return self.execute(self.prepare(requests), cancelled, publish)

    def execute(
        self,
        prepared: Prepared,
        cancelled: Set[str] = frozenset(),
        publish: Publish = publish_nothing,
    ) -> list[Ran]:
        """Run a batch; a streaming handler's steps go to ``publish`` as they come."""
        requests = prepared.requests
        start = self._clock_ms()
        outcomes: dict[int, Outcome] = {}
        retries: dict[int, float | None] = {}
        live = self._live(prepared, cancelled, start, outcomes)
        if live:
            # Grows while a streaming handler runs: each step's cancel check adds to it.
            # (or, for a handler that declares requests, the runner's watch: the same set)
            alive_cancelled = cancelled if isinstance(cancelled, set) else set(cancelled)
            infos = self._infos([requests[i] for i in live], alive_cancelled)
            results = self._isolated([prepared.payloads[i] for i in live], infos)
            if results[0][0] == _STREAM:
                running = StreamRun(
                    [requests[i] for i in live], publish, alive_cancelled, self._limits,
                    encoder=self._encoder,
                )  # fmt: skip
                results = running.run(
                    results[0][1], self._call.loop.run, self._retry_on, error_text
                )
            self._collect(requests, live, results, outcomes, retries)
        end = self._clock_ms()
        size = len(requests)
        if not retries:  # the common case, without a lookup and keywords per request
            return [Ran(r, outcomes[i], start, end, size) for i, r in enumerate(requests)]
        return [
            Ran(
                request, outcomes[i], start, end, size,
                retry=i in retries, retry_delay_s=retries.get(i),
            )
            for i, request in enumerate(requests)
        ]  # fmt: skip

    def _live(
        self, prepared: Prepared, cancelled: Set[str], start: int, outcomes: dict[int, Outcome]
    ) -> list[int]:
        """The positions of the requests to run; the others' outcomes go into ``outcomes``."""
        requests = prepared.requests
        # The common case first: nothing to drop (``Request.expired``, inline).
        if not (
            cancelled or prepared.undecodable or any(0 < r.deadline <= start for r in requests)
        ):
            return list(range(len(requests)))
        live: list[int] = []
        for i, request in enumerate(requests):
            if request.id in cancelled:
                # Dropped before it costs handler time: nobody waits for it any more.
                outcomes[i] = Outcome(request.id, CANCELLED, b"cancelled before it ran")
            elif request.expired(start):
                # Dropped before it costs handler time.
                outcomes[i] = Outcome(request.id, EXPIRED, b"deadline passed before it ran")
            elif i in prepared.undecodable:
                outcomes[i] = Outcome(request.id, DEAD, prepared.undecodable[i].encode())
            else:
                live.append(i)
        return live

    def _collect(
        self,
        requests: list[Request],
        live: list[int],
        results: list[tuple[str, Any]],
        outcomes: dict[int, Outcome],
        retries: dict[int, float | None],
    ) -> None:
        """The outcomes of the requests that ran (``results`` of those at ``live``); the
        results are encoded together (``codec.encode_many``)."""
        ok_at: list[int] = []
        ok_values: list[Any] = []
        for i, (kind, value) in zip(live, results, strict=True):
            if kind == _OK:
                ok_at.append(i)
                ok_values.append(value)
            elif kind == CANCELLED_KIND:
                outcomes[i] = Outcome(requests[i].id, CANCELLED, str(value).encode())
            elif kind == _RETRY:
                delay, text = value
                retries[i] = delay
                outcomes[i] = Outcome(requests[i].id, ERROR, text.encode())
            else:
                outcomes[i] = Outcome(requests[i].id, ERROR, str(value).encode())
        cts = [requests[i].ct for i in ok_at]
        bodies = codec.encode_many(ok_values, cts, self._limits, encoder=self._encoder)
        for i, body in zip(ok_at, bodies, strict=True):
            if isinstance(body, bytes):
                outcomes[i] = Outcome(requests[i].id, OK, body)
            else:
                outcomes[i] = Outcome(
                    requests[i].id, ERROR, f"PayloadError: result: {body}".encode()
                )

    @property
    def wants_requests(self) -> bool:
        """The handler declares ``requests``: it may ask ``cancelled()`` while it runs."""
        return self._call.wants_requests

    def _infos(self, requests: list[Request], cancelled: Set[str]) -> list[RequestInfo]:
        """The ``requests`` argument, built only for a handler that declares it."""
        if not self._call.wants_requests:
            return []
        return [request_info(r, cancelled) for r in requests]

    def _isolated(self, payloads: list[Any], infos: Sequence[RequestInfo]) -> list[tuple[str, Any]]:
        """(_OK, result), (_ERROR, error text) or (_RETRY, (delay, text)) per payload,
        bisecting on exceptions so only the items that raise fail. ``infos``: the payloads'
        RequestInfo (empty when the handler does not take them)."""
        try:
            results = self._call(list(payloads), infos)
        except self._retry_on as exc:
            # A retry request (or a retryable error such as running out of GPU memory) is
            # about the batch, not one item: re-queue all of it, no bisection.
            delay = exc.delay if isinstance(exc, Retry) else None
            return [(_RETRY, (delay, error_text(exc)))] * len(payloads)
        except Exception as exc:
            if len(payloads) == 1:
                return [(_ERROR, error_text(exc))]
            log.debug(
                "handler raised on a batch of %d; bisecting: %s",
                len(payloads),
                exc,
                extra={"event": "handler_bisect"},
            )
            middle = len(payloads) // 2
            return self._isolated(payloads[:middle], infos[:middle]) + self._isolated(
                payloads[middle:], infos[middle:]
            )
        # A generator: a streaming handler (the list check first: the plain form's answer).
        if type(results) is not list and (
            inspect.isgenerator(results) or inspect.isasyncgen(results)
        ):
            return [(_STREAM, results)] * len(payloads)
        if not isinstance(results, list | tuple) or len(results) != len(payloads):
            got = len(results) if isinstance(results, list | tuple) else type(results).__name__
            text = (
                f"HandlerContractError: handler returned {got} results for {len(payloads)} "
                "payloads (it must return a list of the same length, in the same order)"
            )
            log.error("%s", text, extra={"event": "handler_contract_error"})
            return [(_ERROR, text)] * len(payloads)
        return [(_OK, r) for r in results]
