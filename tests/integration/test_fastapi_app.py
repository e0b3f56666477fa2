"""The FastAPI recipe (examples/fastapi_app.py, the file docs/fastapi.md shows) under a real
uvicorn process, with real worker processes and a private redis-server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from helpers.entries import wait_cancel_key
from helpers.webapp import AppProcess, start_app
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer, RequestCancelled, ResultNotFound
from redbatch.protocol import fields
from redbatch.protocol.keys import KeySpace

QUEUE = "embed"  # the example's queue
CONCURRENT = 500


@pytest.fixture
def app(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[AppProcess]:
    process = start_app(redis_url, namespace, log_dir=str(tmp_path))
    yield process
    process.stop()


def test_concurrent_requests_each_get_their_own_answer(
    app: AppProcess, worker_factory: Callable[..., WorkerProcess]
) -> None:
    wait_serving(worker_factory([QUEUE]))

    async def main() -> list[httpx.Response | BaseException]:
        # One connection per request, all at once: 500 endpoint tasks share one producer.
        # None is kept alive: with keep-alive, httpx's pool sent 300 of the 500 one after
        # another on reused connections (50/s) until its 5 s keep-alive expiry, and one sent
        # as uvicorn's own 5 s timer closed its connection was reset (httpx.ReadError in CI).
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=app.url, limits=limits, timeout=60) as client:
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            posts = [client.post("/embed", json={"text": f"t{i}"}) for i in range(CONCURRENT)]
            # Every request ends before the client closes: a failed one leaves no socket for
            # the garbage collector to warn about in a later test, and all failures are seen.
            return await asyncio.gather(*posts, return_exceptions=True)

    answers = asyncio.run(main())
    failed = [(i, repr(a)) for i, a in enumerate(answers) if isinstance(a, BaseException)]
    assert not failed, (
        f"{len(failed)} failed, the first {failed[:3]}; uvicorn:\n{app.log()[-3000:]}"
    )
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    assert [a.status_code for a in responses] == [200] * CONCURRENT
    assert [a.json() for a in responses] == [{"embedding": f"t{i}"} for i in range(CONCURRENT)]


def test_a_client_that_hangs_up_cancels_its_request(
    app: AppProcess,
    worker_factory: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    keys = KeySpace(namespace).queue(QUEUE)
    # No worker yet: the request waits in the queue while its client is still connected.
    host, port = urlsplit(app.url).hostname, urlsplit(app.url).port
    assert host is not None and port is not None
    body = json.dumps({"text": "hung-up"}).encode()
    with socket.create_connection((host, port), timeout=10) as client:
        client.sendall(
            b"POST /embed HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        entries = wait_until(lambda: redis_client.xrange(keys.stream), what="the request queued")
    # The client hung up. The endpoint's task is cancelled (redbatch.asgi), and with it the
    # producer's call: it marks the request cancelled in Redis.
    request_id = entries[0][1][fields.ID.encode()].decode()
    wait_cancel_key(redis_client, keys, request_id)

    seen = tmp_path / "seen.jsonl"
    worker = worker_factory(
        [QUEUE], "helpers.handlers:record_echo", "--handler-option", f"log={seen}"
    )
    wait_serving(worker)
    answer = httpx.post(f"{app.url}/embed", json={"text": "after"}, timeout=60)
    assert (answer.status_code, answer.json()) == (200, {"embedding": "after"})

    with Producer(redis_client, namespace=namespace) as producer:

        def outcome() -> BaseException | None:
            try:
                producer.get_result(QUEUE, request_id)
            except ResultNotFound:
                return None
            except RequestCancelled as exc:
                return exc
            raise AssertionError("the request ran")

        assert isinstance(wait_until(outcome, what="its outcome"), RequestCancelled)
    # The worker read it before "after" (one stream, in order) and never gave it the handler.
    assert seen.read_text(encoding="utf-8").splitlines() == ['"after"']
