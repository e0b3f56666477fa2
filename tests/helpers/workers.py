"""Worker processes for integration tests: real ``redbatch worker`` subprocesses."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from helpers import subprocess_env
from helpers.skew import merged_env

STOP_TIMEOUT_S = 15.0


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: str
    args: list[str] = field(default_factory=list)
    # The exit code the test expects (e.g. a batch_timeout exit); teardown checks it.
    expected_exit: int = 0
    # The log line after which SIGTERM drains (default: this worker, or a pool child, serving).
    ready: re.Pattern[str] | None = None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (drain), wait; returns the exit code.

        A worker still starting (interpreter, imports) has no SIGTERM handler yet and would
        die of the signal (-15) instead of draining; the drain is what a stop tests, so wait
        (bounded) until it serves or has exited before signalling."""
        if self.proc.poll() is None:
            # A pool's children are "<name>-<i>"; any one serving has the pool's handler on.
            marker = self.ready or re.compile(rf"worker {re.escape(self.name)}(-\d+)? serving")
            deadline = time.monotonic() + timeout
            while (
                self.proc.poll() is None
                and not marker.search(self.log())
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
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
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    python_options: tuple[str, ...] = (),
) -> WorkerProcess:
    """``env``: additions to the child's environment (``helpers.skew.merged_env`` rules);
    ``python_options``: the interpreter's own (``-P``: the working directory not on sys.path,
    as with the installed ``redbatch`` script)."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable, *python_options, "-m", "redbatch", "worker", *queues,
        "--handler", handler, "--redis-url", redis_url, "--namespace", namespace,
        "--name", name, "--block-ms", "200", *extra,
    ]  # fmt: skip
    log_path = f"{log_dir}/{name}.log"
    with open(log_path, "wb") as log:
        child_env = merged_env(subprocess_env(), env or {})
        proc = subprocess.Popen(args, env=child_env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    return WorkerProcess(name, proc, log_path, args)


# The type of the ``worker_factory`` fixture (conftest): start a worker, stopped at teardown.
WorkerFactory = Callable[..., WorkerProcess]


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Bounded polling of a condition no event announces; returns its first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)


def wait_serving(worker: WorkerProcess, timeout: float = 30.0) -> WorkerProcess:
    """Wait until the worker has created its groups and is about to read.

    Its "serving" log line is the signal: on Redis 7.0 a blocking XREADGROUP that finds
    nothing does not create the consumer, so an idle worker never shows in XINFO CONSUMERS.
    Entries added after the line are read whether or not that first read has started.
    """
    marker = f"worker {worker.name} serving"
    wait_until(lambda: marker in worker.log() or worker.proc.poll() is not None, timeout, marker)
    assert worker.proc.poll() is None, worker.log()
    return worker


def assert_drained(client: redis.Redis, stream: str) -> None:
    """Nothing left behind: the stream is empty and nothing is pending."""
    assert client.xlen(stream) == 0, f"{stream} still holds entries"
    pending = client.xpending(stream, "workers")
    assert pending["pending"] == 0, f"{stream} has pending entries: {pending}"
