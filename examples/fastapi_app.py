"""A FastAPI service in front of redbatch workers: POST /embed, GET /healthz.

Run it (a worker serving the queue ``embed`` elsewhere)::

    REDBATCH_REDIS_URL=redis://localhost:6379/0 uvicorn fastapi_app:app --app-dir examples

``tests/integration/test_fastapi_app.py`` runs this very file under uvicorn: 500 concurrent
requests, and a client that hangs up while its request waits (the request ends
``cancelled``; no worker runs it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from redbatch import (
    AsyncProducer,
    ConnectionFailed,
    NoWorker,
    PayloadError,
    PayloadTooLarge,
    ProducerClosed,
    QueueFull,
    RedbatchError,
    RedisRefused,
    RequestCancelled,
    RequestDead,
    RequestExpired,
    RequestFailed,
    ResultTimeout,
)
from redbatch.asgi import CancelOnDisconnect

# The same variables as redbatch's own processes read (an unknown REDBATCH_* is an error
# there, so an app sharing their environment invents no new ones).
REDIS_URL = os.environ.get("REDBATCH_REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("REDBATCH_NAMESPACE", "rb")
QUEUE = "embed"
# Longer than a batch takes under load, shorter than the load balancer's idle timeout: past
# it the caller gets a 504 and the request is cancelled in Redis (no worker starts it late).
TIMEOUT_S = float(os.environ.get("EMBED_TIMEOUT_S", "10"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One producer per process and event loop, shared by all requests. from_url does no I/O;
    # connect() makes a Redis that is down fail the start-up (without it the app starts,
    # /healthz answers 503 until Redis does, and requests get ConnectionFailed: 503).
    async with AsyncProducer.from_url(REDIS_URL, namespace=NAMESPACE) as producer:
        await producer.connect()
        app.state.producer = producer
        yield


app = FastAPI(lifespan=lifespan)
# A client that hangs up cancels its endpoint; the producer then cancels the request in Redis.
app.add_middleware(CancelOnDisconnect)


class EmbedRequest(BaseModel):
    text: str


@app.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    producer: AsyncProducer = request.app.state.producer
    vector = await producer.call(QUEUE, body.text, timeout=TIMEOUT_S)
    return {"embedding": vector}


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    producer: AsyncProducer = request.app.state.producer
    await producer.ping()  # ConnectionFailed: 503 below
    return {"status": "ok"}


# What a caller sees for each redbatch error, first match wins (subclasses first). 503s say
# "not you, try again shortly" (with Retry-After): a full queue is the service's overload, not
# this caller's rate, hence 503 rather than 429. The model failing is an upstream's failure
# (502); a result that did not come in time, a gateway timeout (504).
STATUS: list[tuple[type[RedbatchError], int]] = [
    (QueueFull, 503),
    (ConnectionFailed, 503),
    (RedisRefused, 503),
    (NoWorker, 503),  # only with require_worker=True: nothing serves the queue right now
    (ProducerClosed, 503),  # the server is shutting down: another replica will answer
    (PayloadTooLarge, 413),
    (PayloadError, 422),
    (ResultTimeout, 504),
    (RequestExpired, 504),
    (RequestFailed, 502),
    (RequestDead, 502),
    (RequestCancelled, 409),  # cancelled by someone else (an operator, another process)
    (RedbatchError, 500),
]
RETRY_AFTER_S = "1"


def status_of(exc: RedbatchError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


@app.exception_handler(RedbatchError)
async def redbatch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RedbatchError)  # registered for RedbatchError only
    status = status_of(exc)
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    detail = {"error": type(exc).__name__, "detail": str(exc)}
    return JSONResponse(detail, status_code=status, headers=headers)
