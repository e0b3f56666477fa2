"""Timeouts under packet loss, run inside a network namespace of its own.

``unshare -n python3 -m helpers.netloss sync|async`` (as root): brings up loopback, starts a
private redis-server, submits a request, then drops every packet on loopback with a token
bucket of 8 bit/s (``tc ... tbf``: this kernel has no netem) and times ``result``, ``call``
and ``map`` with a 1 s timeout. Prints one JSON object: the seconds each took and what it
raised. Loss is lifted before the producer closes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from helpers.servers import suite_server
from redbatch import AsyncProducer, Producer
from redbatch.embedded import EmbeddedRedis

TIMEOUT_S = 1.0
LOSS = ["tbf", "rate", "8bit", "burst", "100", "limit", "1"]


def loss(on: bool) -> None:
    if on:
        subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", *LOSS], check=True)
    else:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=True)


def timed(fn: Callable[[], Any]) -> dict[str, Any]:
    began = time.monotonic()
    try:
        fn()
        raised = ""
    except Exception as exc:
        raised = type(exc).__name__
    return {"seconds": time.monotonic() - began, "raised": raised}


async def timed_async(fn: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    began = time.monotonic()
    try:
        await fn()
        raised = ""
    except Exception as exc:
        raised = type(exc).__name__
    return {"seconds": time.monotonic() - began, "raised": raised}


def run_sync(url: str) -> dict[str, Any]:
    producer = Producer.from_url(url, namespace="loss")
    handle = producer.submit("q", 1)
    loss(True)
    try:
        found = {
            "result": timed(lambda: handle.result(timeout=TIMEOUT_S)),
            "call": timed(lambda: producer.call("q", 2, timeout=TIMEOUT_S)),
            "map": timed(lambda: producer.map("q", [3, 4], timeout=TIMEOUT_S)),
        }
    finally:
        loss(False)
    producer.close()
    return found


async def run_async(url: str) -> dict[str, Any]:
    producer = AsyncProducer.from_url(url, namespace="loss")
    handle = await producer.submit("q", 1)
    loss(True)
    try:
        found = {
            "result": await timed_async(lambda: handle.result(timeout=TIMEOUT_S)),
            "call": await timed_async(lambda: producer.call("q", 2, timeout=TIMEOUT_S)),
            "map": await timed_async(lambda: producer.map("q", [3, 4], timeout=TIMEOUT_S)),
        }
    finally:
        loss(False)
    await producer.close()
    return found


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with EmbeddedRedis(command=suite_server().command) as server:
        if sys.argv[1] == "sync":
            found = run_sync(server.url)
        else:
            found = asyncio.run(run_async(server.url))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
