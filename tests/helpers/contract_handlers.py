"""Handlers in the forms of the handler contract (async, ``requests``, tensors), imported by
worker processes that tests start as ``helpers.contract_handlers:NAME``."""

from __future__ import annotations

import asyncio
from typing import Any

from redbatch import RequestInfo

# One asyncio connection to Redis for the process's life, opened by the first batch. Its
# streams belong to the loop that opened it: reusing it from another loop raises.
_connection: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []


async def redis_client_id(payloads: list[Any], port: str = "0") -> list[Any]:
    """Answers every payload with ``CLIENT ID`` of this process's one asyncio connection to
    the Redis on ``port``: the same id across batches means the client was reused."""
    if not _connection:
        _connection.append(await asyncio.open_connection("127.0.0.1", int(port)))
    reader, writer = _connection[0]
    writer.write(b"CLIENT ID\r\n")
    await writer.drain()
    line = await reader.readline()  # ":<id>\r\n"
    return [int(line[1:])] * len(payloads)


def describe(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
    """Answers each payload with what the handler was told about its request."""
    return [
        {
            "payload": payload, "id": r.id, "queue": r.queue, "attempt": r.attempt,
            "cost": r.cost, "priority": r.priority, "enqueued_ms": r.enqueued_ms,
            "deadline_ms": r.deadline_ms, "cancelled": r.cancelled(),
        }
        for payload, r in zip(payloads, requests, strict=True)
    ]  # fmt: skip


def tensors(payloads: list[Any]) -> list[Any]:
    """Answers each number with torch tensors: float32 [x, 2x] and the same in bfloat16."""
    import torch  # noqa: PLC0415 - only the torch test runs this handler

    return [
        {"f32": torch.tensor([x, 2 * x], dtype=torch.float32), "bf16": torch.tensor([x]).bfloat16()}
        for x in payloads
    ]


def unencodable_when_asked(payloads: list[Any]) -> list[Any]:
    """Echo, but the payload "set" is answered with a set, which no codec can carry."""
    return [{1, 2} if p == "set" else p for p in payloads]


async def until_one_is_cancelled(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
    """Runs (up to 20 s) until a request of its batch is cancelled; answers with what each
    request's ``cancelled()`` says then: a plain handler learns of a cancel while it runs."""
    for _ in range(1000):
        if any(r.cancelled() for r in requests):
            break
        await asyncio.sleep(0.02)
    return [r.cancelled() for r in requests]
