"""Shared fixtures.

Integration tests get one private redis-server per session (never the machine's 6379) and
isolate themselves with a unique ``namespace`` and ``queue`` per test instead of flushing.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"

# `helpers` lives in tests/, and redbatch must import from this checkout even before
# `pip install -e .`; put both on sys.path explicitly rather than relying on pytest's
# conftest-directory insertion, which depends on the import mode.
for _path in (TESTS_DIR.parent / "src", TESTS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from hypothesis import settings  # noqa: E402

from helpers.schedulers import start_scheduler, wait_running  # noqa: E402
from helpers.servers import suite_server, suite_server_name  # noqa: E402
from helpers.workers import WorkerProcess  # noqa: E402
from redbatch.embedded import EmbeddedRedis, find_redis_server  # noqa: E402
from redbatch.servers import SYSTEM  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the selected server's root filesystem (first use: ~1 min) before any test runs,
    outside every test's timeout; a build that fails stops the session, never skips."""
    if suite_server_name() != SYSTEM:
        suite_server()


# Hypothesis's per-example deadline (200 ms) measures the machine's load, not the code: on a
# busy 2-core CI box a property test failed on it. Properties here are about outcomes.
settings.register_profile("redbatch", deadline=None)
settings.load_profile("redbatch")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as ``integration`` (select with -m)."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private server on a free port, started once per session: the system's redis-server,
    or the one ``REDBATCH_TEST_SERVER`` names (built when missing, never skipped)."""
    if suite_server_name() == SYSTEM and find_redis_server() is None:
        message = "redis-server is not on PATH (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with EmbeddedRedis(command=suite_server().command) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's private server (``redis://127.0.0.1:PORT/0``)."""
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes (decode_responses=False) client to the private server, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace() -> str:
    """A key prefix unique to this test, so tests share one server without flushing it."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def queue() -> str:
    """A queue name unique to this test."""
    return "q" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def helpers_path() -> Path:
    """Path of tests/helpers (the package worker subprocesses import handlers from)."""
    return TESTS_DIR / "helpers"


@pytest.fixture
def worker_factory(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; each is stopped (SIGTERM, drain) after the test and must
    exit 0 unless the test killed it."""
    from helpers.workers import start_worker  # noqa: PLC0415

    started: list[WorkerProcess] = []

    def start(
        queues: list[str], handler: str = "redbatch.handlers:echo", *extra: str
    ) -> WorkerProcess:
        worker = start_worker(
            redis_url, namespace, queues, log_dir=str(tmp_path), handler=handler, extra=extra
        )
        started.append(worker)
        return worker

    yield start
    failures = []
    for worker in started:
        killed = worker.proc.returncode is not None and worker.proc.returncode < 0
        code = worker.stop()
        if code != worker.expected_exit and not killed:
            failures.append(f"{worker.name} exited {code}:\n{worker.log()[-2000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def other_queue() -> str:
    """A second queue name unique to this test."""
    return "r" + uuid.uuid4().hex[:8]


@pytest.fixture
def scheduler_factory(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``redbatch scheduler`` processes (``--interval 0.2`` plus ``extra``) and wait
    until each serves; each is stopped with SIGTERM after the test and must exit 0 without
    logging a traceback."""
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        proc = start_scheduler(redis_url, namespace, log_dir=str(tmp_path), extra=extra)
        started.append(proc)
        return wait_running(proc)

    yield start
    failures = []
    for proc in started:
        code = proc.stop()
        if code != 0:
            failures.append(f"{proc.name} exited {code}:\n{proc.log()[-3000:]}")
        elif "Traceback" in proc.log():
            failures.append(f"{proc.name} logged a traceback:\n{proc.log()[-3000:]}")
    assert not failures, "\n".join(failures)
