"""An AsyncProducer's tie to one event loop, and its connection made at first use (never
in its constructor: a web app builds its producer before the loop serves, and must not
block that loop on a Redis that does not answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redbatch.errors import ConnectionFailed, WrongEventLoop
from redbatch.producer.admission import Deadline
from redbatch.producer.options import PoolOptions
from redbatch.transport.cluster import connect_async_lazily, pool_options
from redbatch.transport.connection import AsyncClient, check_url

Connector = Callable[[], Awaitable[AsyncClient]]


def connector(url: str, pool: PoolOptions, name: str) -> Connector:
    """What connects to ``url`` at first use; the URL and pool size are checked now."""
    check_url(url)
    pool_options(pool["max_connections"], None)
    return lambda: connect_async_lazily(url, **pool, client_name=name)


def wrong_loop() -> WrongEventLoop:
    """The error of a producer, or one of its handles, used on a loop not its own: asyncio
    would hang, or raise "attached to a different loop" naming no fix."""
    return WrongEventLoop(
        "this AsyncProducer was first used on another event loop; its connections, handles "
        "and futures belong to that loop: make one per event loop (e.g. in the app's lifespan)"
    )


class OneLoop:
    """The loop a producer first ran on; ``connector`` makes its client (None: given)."""

    def __init__(self, connector: Connector | None = None) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connector = connector

    @property
    def connected(self) -> bool:
        return self.connector is None

    def check(self) -> None:
        """Bind to the running loop at first use; WrongEventLoop on any other."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif self.loop is not loop:
            raise wrong_loop()

    async def connect(self, deadline: Deadline | None = None) -> AsyncClient | None:
        """The client made now, or None when connected already. ConnectionFailed when
        Redis does not answer by ``deadline`` (the next call tries again)."""
        self.check()
        connector = self.connector
        if connector is None:
            return None
        try:
            async with asyncio.timeout(None if deadline is None else deadline.remaining()):
                client = await connector()
        except TimeoutError:
            timeout = deadline.timeout if deadline is not None else None
            raise ConnectionFailed(f"cannot connect to Redis within {timeout} s") from None
        if self.connector is not connector:  # another task connected meanwhile
            await client.aclose()
            return None
        self.connector = None
        return client
