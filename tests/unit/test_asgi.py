"""redbatch.asgi.CancelOnDisconnect against a scripted server (the real uvicorn one is in
tests/integration/test_fastapi_app.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from redbatch.asgi import CancelOnDisconnect, Message, Receive, Scope, Send

HTTP: Scope = {"type": "http", "method": "POST", "path": "/"}


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Server:
    """The server's side of one request: messages the test releases one by one; after the
    response is complete ``receive`` says ``http.disconnect``, as uvicorn does."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.response_complete = asyncio.Event()

    async def receive(self) -> Message:
        get = asyncio.ensure_future(self.incoming.get())
        done = asyncio.ensure_future(self.response_complete.wait())
        finished, _ = await asyncio.wait([get, done], return_when=asyncio.FIRST_COMPLETED)
        if get in finished:
            done.cancel()
            return get.result()
        get.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.response_complete.set()


async def respond(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def run(middleware: CancelOnDisconnect, server: Server, scope: Scope = HTTP) -> None:
    await asyncio.wait_for(middleware(scope, server.receive, server.send), 5)


@on_a_loop
async def test_a_hang_up_before_the_response_cancels_the_app() -> None:
    started, outcome = asyncio.Event(), []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        try:
            await asyncio.sleep(60)  # an endpoint awaiting producer.call(...)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        await respond(send, b"too late")

    server = Server()
    task = asyncio.create_task(run(CancelOnDisconnect(app), server))
    await started.wait()
    await server.incoming.put({"type": "http.disconnect"})
    await task  # returns normally: nobody is left to answer
    assert outcome == ["cancelled"]
    assert server.sent == []


@on_a_loop
async def test_the_body_reaches_the_app_in_order_and_then_the_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
        await respond(send, b"".join(m["body"] for m in seen))
        seen.append(await receive())  # after the response: the server says disconnect
        seen.append(await receive())  # and says it again

    server = Server()
    for part, more in ((b"ab", True), (b"cd", False)):
        await server.incoming.put({"type": "http.request", "body": part, "more_body": more})
    await run(CancelOnDisconnect(app), server)
    assert [m["type"] for m in seen] == ["http.request"] * 2 + ["http.disconnect"] * 2
    assert server.sent[-1]["body"] == b"abcd"


@on_a_loop
async def test_work_after_a_complete_response_is_not_cancelled() -> None:
    # Starlette's background tasks run in the app's call after the response was sent; the
    # server's "http.disconnect" then only means the exchange is over.
    finished = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"ok")
        await asyncio.sleep(0.05)
        finished.append(True)

    server = Server()
    await run(CancelOnDisconnect(app), server)
    assert finished == [True]


@on_a_loop
async def test_an_error_of_the_app_goes_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("endpoint failed")

    with pytest.raises(ValueError, match="endpoint failed"):
        await run(CancelOnDisconnect(app), Server())


@on_a_loop
async def test_cancelling_the_middleware_cancels_the_app_and_propagates() -> None:
    started, outcome = asyncio.Event(), []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    task = asyncio.create_task(run(CancelOnDisconnect(app), Server()))
    await started.wait()
    task.cancel()  # the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]


@on_a_loop
async def test_other_scopes_pass_through_untouched() -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    server = Server()
    scope: Scope = {"type": "lifespan"}
    await CancelOnDisconnect(app)(scope, server.receive, server.send)
    assert calls == [(scope, server.receive, server.send)]
