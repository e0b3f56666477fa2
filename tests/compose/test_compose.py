"""The stack under ``docker compose``: tests/integration/test_stack.py's scenario against real
containers. ``docker compose up -d --build --scale worker=3``, then the `producer` service
(benchmarks/stack_load.py, 10,000 requests) runs while one worker container is stopped,
another is killed and the redis container is restarted; the load's counts must follow its
rule (every request ends ok, or lost to Redis's crash, none hangs).

Skipped, with the reason, when no Docker engine answers (``docker info``) or the compose
plugin is missing (``docker compose version``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from helpers import REPO_ROOT

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

WORKERS = 3
UP_TIMEOUT_S = 600.0  # the first build downloads the base image


def _docker(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _why_not_docker() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if info.returncode != 0:
        return f"no Docker engine answers `docker info`: {info.stderr.strip()[:200]}"
    if _docker("compose", "version", timeout=20).returncode != 0:
        return "the docker compose plugin is missing (`docker compose version` fails)"
    return None


@pytest.fixture(scope="module")
def project() -> Iterator[list[str]]:
    """``docker compose -p <unique>`` with the stack up and 3 workers; torn down with -v."""
    reason = _why_not_docker()
    if reason:
        pytest.skip(reason)
    compose = ["compose", "--project-directory", str(REPO_ROOT), "-p", f"rbt{uuid.uuid4().hex[:8]}"]
    up = _docker(*compose, "up", "-d", "--build", "--wait", "--scale", f"worker={WORKERS}",
                 timeout=UP_TIMEOUT_S)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield compose
    finally:
        _docker(*compose, "down", "-v", "--timeout", "60", timeout=180)


def _containers(compose: list[str], service: str) -> list[str]:
    result = _docker(*compose, "ps", "-q", service)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_stack_answers_every_request_through_stop_kill_and_a_redis_restart(
    project: list[str],
) -> None:
    workers = _containers(project, "worker")
    assert len(workers) == WORKERS
    failures: list[str] = []

    def chaos() -> None:
        for delay, args in (
            (2.0, ("stop", workers[0])),  # SIGTERM: drains, exits 0
            (2.0, ("kill", workers[1])),  # SIGKILL: the scheduler re-queues its work
            (2.0, ("compose", *project[1:], "restart", "redis")),
        ):
            time.sleep(delay)
            done = _docker(*args, timeout=120)
            if done.returncode != 0:
                failures.append(f"docker {' '.join(args)}: {done.stderr}")

    thread = threading.Thread(target=chaos)
    thread.start()
    load = _docker(*project, "--profile", "bench", "run", "--rm", "-T", "producer", timeout=300)
    thread.join()
    assert not failures, failures
    assert load.returncode == 0, load.stdout + load.stderr
    counts = json.loads(load.stdout.strip().splitlines()[-1])
    print(f"\ncompose scenario: {counts}")
    assert counts["sent"] + counts["refused"] == 10_000
    assert counts["wrong"] == 0 and counts["errors"] == {}
    assert counts["ok"] + counts["lost"] == counts["sent"]
    stopped = _docker("inspect", "--format", "{{.State.ExitCode}}", workers[0])
    assert stopped.stdout.strip() == "0", "the stopped worker did not drain and exit 0"
