"""The FastAPI recipe (examples/fastapi_app.py, the file docs/fastapi.md shows) under a real
uvicorn process, with real worker processes and a private redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers.webapp import AppProcess, start_app
from helpers.workers import WorkerProcess, wait_serving

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

    async def main() -> list[httpx.Response]:
        # One connection per request, all at once: 500 endpoint tasks share one producer.
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(base_url=app.url, limits=limits, timeout=60) as client:
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            posts = [client.post("/embed", json={"text": f"t{i}"}) for i in range(CONCURRENT)]
            return await asyncio.gather(*posts)

    answers = asyncio.run(main())
    assert [a.status_code for a in answers] == [200] * CONCURRENT
    assert [a.json() for a in answers] == [{"embedding": f"t{i}"} for i in range(CONCURRENT)]
