"""Worker processes for integration tests: real ``redbatch worker`` subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import redis

from helpers import subprocess_env

STOP_TIMEOUT_S = 15.0


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: str
    args: list[str] = field(default_factory=list)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (drain), wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


def start_worker(
    redis_url: str,
    namespace: str,
    queues: list[str],
    *,
    log_dir: str,
    handler: str = "redbatch.handlers:echo",
    extra: tuple[str, ...] = (),
) -> WorkerProcess:
    name = f"w-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable, "-m", "redbatch", "worker", *queues,
        "--handler", handler, "--redis-url", redis_url, "--namespace", namespace,
        "--name", name, "--block-ms", "200", *extra,
    ]  # fmt: skip
    log_path = f"{log_dir}/{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    return WorkerProcess(name, proc, log_path, args)


def wait_serving(client: redis.Redis, stream: str, name: str, timeout: float = 30.0) -> None:
    """Wait until worker ``name`` has joined the consumer group (its first read).

    Polls XINFO CONSUMERS: the group is the only place a worker's readiness is visible.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            consumers = client.xinfo_consumers(stream, "workers")
        except redis.ResponseError:
            consumers = []
        if any(c["name"].decode() == name for c in consumers):
            return
        time.sleep(0.02)
    raise TimeoutError(f"worker {name} did not join the group on {stream} within {timeout} s")


def assert_drained(client: redis.Redis, stream: str) -> None:
    """Nothing left behind: the stream is empty and nothing is pending."""
    assert client.xlen(stream) == 0, f"{stream} still holds entries"
    pending = client.xpending(stream, "workers")
    assert pending["pending"] == 0, f"{stream} has pending entries: {pending}"
