"""Cancel an ASGI endpoint's work when its HTTP client hangs up.

Starlette and FastAPI do not cancel an endpoint whose client disconnected: it runs to its end
and the response goes nowhere. Behind an endpoint that awaits ``producer.call(...)`` that
means a GPU computes an answer nobody reads. ``CancelOnDisconnect`` runs the app in a task of
its own and cancels that task when the server reports ``http.disconnect`` before the response
was sent; the ``AsyncProducer`` (``cancel_on_cancel=True``, its default) then cancels the
request in Redis, and a worker skips it (it ends ``cancelled``).

Plain ASGI, asyncio only, no Starlette import::

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(CancelOnDisconnect)

The request body is read ahead as it arrives (queued for the app, as ``Request.body()``
would hold it anyway): the disconnect can only be seen by reading ``receive()``. A client
that hangs up after the whole response was sent cancels nothing: work that runs after the
response (Starlette's background tasks) goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CancelOnDisconnect"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DISCONNECT: Message = {"type": "http.disconnect"}


class _Exchange:
    """One HTTP request's messages between the server and the app: what the server sent
    (handed to the app in order), whether the response is complete, whether the client left."""

    def __init__(self, send: Send) -> None:
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._send = send
        self.responded = False
        self.hung_up = False

    async def receive(self) -> Message:
        """The app's ``receive``: the server's messages in order; once the client has left,
        ``http.disconnect`` on every call (as a server answers)."""
        if self.hung_up and self._inbox.empty():
            return dict(_DISCONNECT)
        return await self._inbox.get()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.responded = True
        await self._send(message)

    async def watch(self, receive: Receive, app: asyncio.Task[None]) -> None:
        """Read the server's messages until the client leaves; cancel ``app`` if it leaves
        before the response is complete (a server also says ``http.disconnect`` once the
        response is complete, which is no reason to cancel anything)."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.hung_up = True
                self._inbox.put_nowait(message)  # an app waiting in receive() sees it too
                if not self.responded:
                    app.cancel()
                return
            self._inbox.put_nowait(message)


class CancelOnDisconnect:
    """ASGI middleware: cancel the app's task of an HTTP request whose client disconnects
    before the response is complete. Other scopes (lifespan, websocket) pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(send)
        app = asyncio.create_task(self._run(scope, exchange))
        watcher = asyncio.create_task(exchange.watch(receive, app))
        try:
            await app
        except asyncio.CancelledError:
            # Swallowed only when the hang-up cancelled the app; a cancellation of this task
            # (the server shutting down) goes on, and awaiting ``app`` has cancelled it too.
            current = asyncio.current_task()
            if not exchange.hung_up or (current is not None and current.cancelling()):
                raise
        finally:
            watcher.cancel()
            await asyncio.wait([watcher])

    async def _run(self, scope: Scope, exchange: _Exchange) -> None:
        await self.app(scope, exchange.receive, exchange.send)
