"""Calling the user's handler in each of its forms: ``def`` or ``async def``, with or without
a ``requests`` parameter.

Async handlers run on one event loop, created on first use by the handler thread (every
handler call and warm-up runs on that one thread) and kept for the process's life: a client
whose connections belong to a loop (an ``httpx.AsyncClient``, an ``aiohttp`` session) made
in one batch or at warm-up keeps working in the next.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redbatch.worker.request_info import RequestInfo

# Any of the forms: (payloads) or (payloads, requests), returning a list or an awaitable one.
Handler = Callable[..., Any]

REQUESTS_PARAMETER = "requests"


class HandlerLoop:
    """The event loop of the handler thread, made on first use, closed at shutdown."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(_awaited(awaitable))

    def close(self) -> None:
        """Finish async generators and the default executor, then close the loop (on the
        thread that ran it)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    # asyncio.Runner.run takes coroutines only; a handler may return any awaitable.
    return await awaitable


def takes_requests(handler: Handler) -> bool | None:
    """How the handler wants ``requests``: None (not at all), True (by keyword) or False
    (positionally: a positional-only parameter)."""
    try:
        parameters = inspect.signature(handler).parameters
    except (TypeError, ValueError):  # a builtin or extension callable without a signature
        return None
    parameter = parameters.get(REQUESTS_PARAMETER)
    if parameter is None or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
        return None
    return parameter.kind is not parameter.POSITIONAL_ONLY


class HandlerCall:
    """One handler, called the way it was declared; an awaitable result is run to its end
    on the handler thread's loop."""

    def __init__(self, handler: Handler, loop: HandlerLoop) -> None:
        self.handler = handler
        self.loop = loop
        self._requests = takes_requests(handler)

    @property
    def wants_requests(self) -> bool:
        return self._requests is not None

    def __call__(self, payloads: list[Any], requests: Sequence[RequestInfo]) -> Any:
        if self._requests is None:
            result = self.handler(payloads)
        elif self._requests:
            result = self.handler(payloads, requests=list(requests))
        else:
            result = self.handler(payloads, list(requests))
        # The list check first: isawaitable asks an ABC, which costs more than the rest of
        # the call, and the plain form's answer is a list.
        if type(result) is not list and inspect.isawaitable(result):
            return self.loop.run(result)
        return result
