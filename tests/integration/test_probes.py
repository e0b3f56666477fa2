"""Kubernetes probes on --metrics-port: /healthz, /readyz and /metrics of real worker and
scheduler processes, anything else 404; a worker whose Redis is gone, one whose batch overran."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import subprocess_env
from helpers.cli import one_error_line, run
from helpers.metrics import free_port
from helpers.servers import suite_server
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.config import WorkerConfig
from redbatch.embedded import EmbeddedRedis
from redbatch.worker import Worker

pytestmark = pytest.mark.integration
Factory = Callable[..., WorkerProcess]
WAIT_S = 30.0


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:PORT/path``; (0, reason) if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


def wait_status(port: int, path: str, status: int, timeout: float = WAIT_S) -> str:
    def answered() -> str | None:
        code, body = get(port, path)
        return body or "-" if code == status else None

    body: str = wait_until(answered, timeout, f"{path} -> {status}")
    return body


def assert_routes(port: int) -> None:
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ok\n")
    code, body = get(port, "/metrics")
    assert code == 200
    assert "redbatch_build_info{" in body
    for path in ("/", "/metrics/x", "/healthz/", "/favicon.ico"):
        code, body = get(port, path)
        assert code == 404, path
        assert "not found" in body


def test_worker_probes(worker_factory: Factory, queue: str) -> None:
    port = free_port()
    wait_serving(worker_factory([queue], "redbatch.handlers:echo", "--metrics-port", str(port)))
    wait_status(port, "/readyz", 200)
    assert_routes(port)


def test_scheduler_probes(scheduler_factory: Factory) -> None:
    port = free_port()
    scheduler_factory("--metrics-port", str(port))
    wait_status(port, "/readyz", 200)
    assert_routes(port)


def test_worker_whose_redis_is_gone_is_unready_then_not_live(tmp_path: Path) -> None:
    namespace, queue = f"p{uuid.uuid4().hex[:6]}", "probe"
    port = free_port()
    (tmp_path / "redis").mkdir()
    server = EmbeddedRedis(directory=tmp_path / "redis", command=suite_server().command)
    server.start()
    worker = start_worker(
        server.url, namespace, [queue], log_dir=str(tmp_path),
        extra=("--metrics-port", str(port), "--heartbeat-ttl", "2"),
    )  # fmt: skip
    try:
        wait_serving(worker)
        wait_status(port, "/readyz", 200)
        assert get(port, "/healthz")[0] == 200
        server.stop()
        # Unready within the heartbeat TTL (2 s), not live past 6 TTLs (12 s).
        assert "not connected" in wait_status(port, "/readyz", 503)
        assert get(port, "/healthz")[0] == 200  # a Redis blip must not restart every worker
        assert "Redis unreachable" in wait_status(port, "/healthz", 503)
    finally:
        worker.kill()
        server.stop()


def test_a_batch_past_batch_timeout_fails_liveness(
    redis_url: str, namespace: str, queue: str, tmp_path: Path
) -> None:
    """In this process, with the watchdog's exit recorded instead of taken, so the probe's
    answer can be read (the real exit is test_liveness's subject)."""
    port = free_port()
    release = tmp_path / "release"
    config = WorkerConfig.from_env(
        {}, queues=(queue,), handler="helpers.handlers:block_until_file", redis_url=redis_url,
        namespace=namespace, metrics_port=port, batch_timeout_s=1, block_ms=100,
        handler_options=(("release", str(release)),),
    )  # fmt: skip
    worker = Worker(config)
    exits: list[int] = []
    worker._heartbeat._exit = exits.append  # the one seam this test needs
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_status(port, "/readyz", 200)
        assert get(port, "/healthz")[0] == 200
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            handle = producer.submit(queue, "held", timeout=60)
            reason = wait_status(port, "/healthz", 503)
            assert "a batch has run for over batch_timeout (1 s)" in reason
            wait_until(lambda: exits, WAIT_S, "the watchdog's exit")
            assert exits == [4]
            release.touch()  # the batch ends and its result is written
            assert handle.result(WAIT_S) == "held"
    finally:
        release.touch()
        worker.stop()
        thread.join(WAIT_S)
    assert not thread.is_alive()


# -- --check, for exec probes and the Dockerfile HEALTHCHECK ------------------------------


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, "--check")


def test_worker_check(
    redis_url: str, namespace: str, queue: str, other_queue: str, worker_factory: Factory
) -> None:
    where = ("--redis-url", redis_url, "--namespace", namespace)
    assert check("worker", queue, *where).returncode == 1  # none yet
    worker = wait_serving(worker_factory([queue]))
    ok = check("worker", queue, *where)
    assert (ok.returncode, ok.stderr) == (0, "")
    missing = check("worker", other_queue, *where)
    assert missing.returncode == 1
    assert f"no worker of {other_queue} runs on this host" in missing.stderr
    assert check("worker", queue, "--redis-url", redis_url, "--namespace", "elsewhere").returncode
    assert worker.stop() == 0
    gone = check("worker", queue, *where)
    assert gone.returncode == 1 and "not live" in gone.stderr


def test_worker_check_of_a_killed_worker_fails(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    where = ("--redis-url", redis_url, "--namespace", namespace)
    worker = wait_serving(worker_factory([queue]))
    assert check("worker", queue, *where).returncode == 0
    worker.kill()
    assert check("worker", queue, *where).returncode == 1


def test_scheduler_check(redis_url: str, namespace: str, scheduler_factory: Factory) -> None:
    where = ("--redis-url", redis_url, "--namespace", namespace)
    assert check("scheduler", *where).returncode == 1
    scheduler = scheduler_factory()
    wait_until(lambda: check("scheduler", *where).returncode == 0, WAIT_S, "scheduler --check")
    assert scheduler.stop() == 0
    assert check("scheduler", *where).returncode == 1


def test_check_of_an_unreachable_redis_is_not_zero(namespace: str, queue: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = check("worker", queue, "--redis-url", url, "--namespace", namespace)
    assert result.returncode == 3 and result.stderr.count("\n") == 1


# -- service links --------------------------------------------------------------------------


LINKS = {
    "REDBATCH_PORT": "tcp://10.96.0.12:9100",
    "REDBATCH_PORT_9100_TCP": "tcp://10.96.0.12:9100",
    "REDBATCH_PORT_9100_TCP_ADDR": "10.96.0.12",
    "REDBATCH_PORT_9100_TCP_PORT": "9100",
    "REDBATCH_PORT_9100_TCP_PROTO": "tcp",
    "REDBATCH_SERVICE_HOST": "10.96.0.12",
    "REDBATCH_SERVICE_PORT": "9100",
}


def run_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redbatch", *args], env=subprocess_env() | env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_service_link_environment_does_not_stop_the_commands(
    redis_url: str, namespace: str, queue: str
) -> None:
    """Kubernetes' variables for a Service named "redbatch": the issue's crash-loop."""
    where = ("--redis-url", redis_url, "--namespace", namespace)
    status = run_with(LINKS, "status", *where)
    assert status.returncode == 0, status.stderr
    # Ran, and found no worker: not stopped by a variable.
    assert run_with(LINKS, "worker", queue, "--check", *where).returncode == 1
    typo = run_with(LINKS | {"REDBATCH_MAX_BATCH_SZE": "8"}, "status", *where)
    assert "unknown environment variable REDBATCH_MAX_BATCH_SZE" in one_error_line(typo, 2)
    clash = run_with(LINKS | {"REDBATCH_METRICS_PORT": "tcp://10.96.0.14:9100"}, "status", *where)
    assert "looks like a Kubernetes service link" in one_error_line(clash, 2)
